"""Values of the VAR flags: a notebook variable (or expression) turned into a request field.

``--documents`` (list of str/dicts, or a DataFrame: one document per row), ``--schema`` (dict,
JSON string or pydantic model), ``--tools`` (functions or v2 tool dicts). Errors are
UsageErrors naming the flag and what it accepts.
"""

from __future__ import annotations

import json
from typing import Any

from IPython.core.error import UsageError

__all__ = ["lookup", "tool_functions", "schema", "documents"]


def lookup(ns: dict[str, Any], expr: str, flag: str) -> Any:
    """The value of a VAR flag: a variable (or expression) in the notebook namespace."""
    try:
        return eval(expr, ns)
    except NameError as exc:
        name = getattr(exc, "name", None) or expr
        raise UsageError(f"{flag}: variable {name!r} is not defined") from None
    except Exception as exc:
        raise UsageError(f"{flag} {expr}: {type(exc).__name__}: {exc}") from None


def tool_functions(ns: dict[str, Any], var: str) -> list[Any]:
    """--tools VAR: a function, a v2 tool dict, or a list of them."""
    value = lookup(ns, var, "--tools")
    funcs = list(value) if isinstance(value, (list, tuple)) else [value]
    for f in funcs:
        if not callable(f) and not isinstance(f, dict):
            raise UsageError(
                f"--tools {var}: {f!r} is not a function; give a function or a list of functions"
            )
    return funcs


def schema(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_json_schema"):  # a pydantic v2 model class
        value = value.model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"--schema: the string is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(
            "--schema: expected a JSON schema (dict, JSON string or pydantic model), got "
            + type(value).__name__
        )
    return value


def documents(value: Any) -> list[Any]:
    """Documents from a list of str/dicts, one str/dict, or a DataFrame (one per row)."""
    if type(value).__module__.startswith("pandas") and hasattr(value, "to_dict"):
        if hasattr(value, "columns"):  # DataFrame: each row's columns become the document data
            docs = []
            for record in value.to_dict(orient="records"):
                data = {str(k): _json_value(v) for k, v in record.items()}
                doc_id = data.pop("id", None)
                docs.append(
                    {"id": str(doc_id), "data": data} if doc_id is not None else {"data": data}
                )
            return docs
        value = list(value)  # a Series: one document per value
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        docs = list(value)
        for i, d in enumerate(docs):
            if not isinstance(d, (str, dict)):
                raise UsageError(
                    f"--documents: item {i} is a {type(d).__name__}; allowed: str, dict "
                    "{id?, data} or a DataFrame"
                )
        return docs
    raise UsageError(
        "--documents: expected a list of str/dicts or a pandas DataFrame, got "
        + type(value).__name__
    )


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if hasattr(v, "item"):  # numpy scalars
        try:
            return v.item()
        except Exception:
            pass
    return str(v)
