"""Tool-call arguments checked against the Python function's signature, with pydantic.

`check_arguments(fn, name, args)` returns ``(positional, keywords)`` ready for ``fn(*p, **k)``
(values converted the way the type hints say: ``"3"`` -> 3 for an ``int``) or the error text
for the model, naming each bad argument. pydantic is imported on the first check, and one
validator per function is kept (weakly) for the next calls.
"""

from __future__ import annotations

import inspect
import typing
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["check_arguments"]

_cache: weakref.WeakKeyDictionary[Any, _Checker] = weakref.WeakKeyDictionary()


class _Checker:
    """A pydantic model of one function's parameters (fields aliased to the real names, so a
    parameter may be called ``json`` or ``model_x`` without clashing with BaseModel)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        from pydantic import ConfigDict, Field, create_model

        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # unresolvable forward references: unchecked parameters
            hints = {}
        self.params: list[inspect.Parameter] = []
        self.extra_ok = False
        fields: dict[str, Any] = {}
        for i, (pname, param) in enumerate(sig.parameters.items()):
            if param.kind is param.VAR_KEYWORD:
                self.extra_ok = True
                continue
            if param.kind is param.VAR_POSITIONAL:
                continue
            self.params.append(param)
            tp = hints.get(pname, Any)
            default = ... if param.default is param.empty else param.default
            fields[f"p{i}"] = (tp, Field(default, alias=pname))
        self.names = [p.name for p in self.params]
        config = ConfigDict(
            extra="allow" if self.extra_ok else "forbid",
            arbitrary_types_allowed=True,
            populate_by_name=False,
        )
        try:
            self.model: Any = create_model("ToolArguments", __config__=config, **fields)
        except Exception:  # a hint pydantic cannot handle: check names only
            loose = {k: (Any, Field(v[1].default, alias=v[1].alias)) for k, v in fields.items()}
            self.model = create_model("ToolArguments", __config__=config, **loose)
        self.by_alias = {f"p{i}": p.name for i, p in enumerate(sig.parameters.values())}

    def check(self, name: str, args: dict[str, Any]) -> tuple[list[Any], dict[str, Any]] | str:
        from pydantic import ValidationError

        try:
            m = self.model.model_validate(args)
        except ValidationError as exc:
            return _describe(name, exc, self.names)
        given = {self.by_alias[f]: getattr(m, f) for f in m.model_fields_set if f in self.by_alias}
        extra = dict(m.model_extra or {})
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for param in self.params:
            if param.name not in given:
                continue
            if param.kind is param.POSITIONAL_ONLY:
                positional.append(given[param.name])
            else:
                keywords[param.name] = given[param.name]
        keywords.update(extra)
        return positional, keywords


def _describe(name: str, exc: Any, names: list[str]) -> str:
    problems: list[str] = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        arg = str(loc[0]) if loc else "?"
        path = "".join(f"[{p!r}]" for p in loc[1:])
        kind = err.get("type")
        if kind == "missing":
            problems.append(f"argument {arg!r} is required")
        elif kind == "extra_forbidden":
            problems.append(f"unexpected argument {arg!r}")
        else:
            shown = repr(err.get("input"))
            if len(shown) > 80:
                shown = shown[:77] + "..."
            problems.append(f"argument {arg!r}{path}: {err.get('msg')} (got {shown})")
    params = ", ".join(names) or "none"
    return f"invalid arguments for {name}: " + "; ".join(problems) + f" (parameters: {params})"


def check_arguments(
    fn: Callable[..., Any], name: str, args: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]] | str:
    try:
        checker = _cache.get(fn)
    except TypeError:  # not weak-referenceable / unhashable
        checker = None
    if checker is None:
        try:
            checker = _Checker(fn)
        except (TypeError, ValueError):  # no inspectable signature: call it as given
            return [], dict(args)
        try:
            _cache[fn] = checker
        except TypeError:
            pass
    return checker.check(name, args)
