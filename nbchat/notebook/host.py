"""`ChatHost`: what the %%chat cell and the %chat commands use of the magics object.

A Protocol, so `cell` and `commands` depend on this small interface instead of importing
`magics` (which imports them): no import cycle.
"""

from __future__ import annotations

from typing import Any, Protocol

from .settings import NbChat

__all__ = ["ChatHost", "check_name"]


class ChatHost(Protocol):
    shell: Any
    settings: NbChat
    errors: Any  # the cells that raised (@{Err}, %chat fix)
    chat_cell: Any  # the %%chat magic (its argparse parser: .parser)

    def conversation(self, name: str, *, new: bool, create: bool) -> Any: ...

    def named(self, name: str | None, create: bool = False) -> Any: ...

    def backend_name(self, flag: str | None) -> str: ...

    def backend(self, name: str, model: str | None) -> Any: ...


def check_name(name: str, flag: str) -> str:
    """`name` if it is a valid Python variable name, else a UsageError naming `flag`."""
    from IPython.core.error import UsageError

    if not name.isidentifier():
        raise UsageError(f"{flag}: {name!r} is not a valid Python variable name")
    return name
