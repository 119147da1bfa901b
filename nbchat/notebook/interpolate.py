"""``@{expr}`` in a %%chat cell (and in flag values) becomes ``str(expr)``.

``@@{`` is a literal ``@{``. Braces alone never mean anything, so dicts, f-strings, JSON and
templates pass through untouched. An undefined name is a UsageError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

__all__ = ["interpolate"]

_INTERP = re.compile(r"@@\{|@\{([^{}]*)\}")


def interpolate(
    text: str,
    namespace: dict[str, Any],
    where: str = "the prompt",
    special: Callable[[str], str | None] | None = None,
) -> str:
    """Replace each ``@{expr}`` in `text` with ``str(eval(expr, namespace))``; ``@@{`` -> ``@{``.

    Any other character (``{``, ``}``, ``$``, ``{{``) is left alone. Errors are UsageErrors
    naming the expression and the missing variable. `special(expr)` may answer an expression
    first (``Err`` / ``Err[n]``, unless the notebook defines ``Err`` itself); None: evaluate.
    """

    def substitute(m: re.Match[str]) -> str:
        if m.group(1) is None:  # the @@{ escape
            return "@{"
        expr = m.group(1).strip()
        if not expr:
            raise UsageError(f"empty @{{}} in {where}: write @{{name}}, or @@{{ for a literal @{{")
        if special is not None and "Err" not in namespace:
            answer = special(expr)
            if answer is not None:
                return answer
        try:
            value = eval(expr, namespace)  # the user's own kernel namespace, like {expr} in IPython
        except NameError as exc:
            name = getattr(exc, "name", None) or str(exc)
            raise UsageError(
                f"@{{{expr}}} in {where}: variable {name!r} is not defined "
                "(define it first; write @@{ for a literal @{, or use --no-interpolate)"
            ) from None
        except Exception as exc:
            raise UsageError(
                f"@{{{expr}}} in {where} failed: {type(exc).__name__}: {exc} "
                "(write @@{ for a literal @{, or use --no-interpolate)"
            ) from None
        return value if isinstance(value, str) else str(value)

    return _INTERP.sub(substitute, text)
