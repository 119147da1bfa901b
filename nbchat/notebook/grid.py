"""``--compare FIELD=V1,V2``: the grid of variants a compared ``%%chat`` runs.

FIELD is a request field the flag table knows (its field name or its flag, ``max_tokens`` or
``max-tokens``; ``-t`` style short names too), ``model`` or ``backend``. Values are converted
with the flag's own type and choices; ranges are checked later by the protocol's
`validate_request` (per variant, the error naming the flag). Several ``--compare`` form the
product, at most `MAX_VARIANTS` variants (the error names the ``--compare`` that goes beyond).
"""

from __future__ import annotations

import itertools
from typing import Any

from IPython.core.error import UsageError

from ..compared import MAX_VARIANTS
from .flags import _SHAPED, FLAGS, Flag

__all__ = ["expand_grid", "COMPARABLE", "variant_fields"]

_BOOL = {"true": True, "on": True, "1": True, "yes": True, "false": False, "off": False, "0": False}


def _comparable() -> dict[str, Flag]:
    out: dict[str, Flag] = {}
    for f in FLAGS:
        if not f.field or f.kwargs.get("action") == "append" or f.field == "messages":
            continue
        if f.field in _SHAPED and f.field not in ("model", "thinking", "citation_options"):
            continue
        if f.field == "thinking" and f.dest != "thinking":
            continue
        out[f.dest if f.field in ("thinking", "citation_options") else f.field] = f
    return out


COMPARABLE: dict[str, Flag] = _comparable()  # key -> its flag (backend handled separately)
_ALIASES = {n.lstrip("-").replace("-", "_"): key for key, f in COMPARABLE.items() for n in f.names}


def _key(name: str, spec: str) -> str:
    k = name.strip().lstrip("-").replace("-", "_")
    if k == "backend":
        return k
    k = _ALIASES.get(k, k)
    if k not in COMPARABLE:
        allowed = ", ".join([*COMPARABLE, "backend"])
        raise UsageError(f"--compare {spec}: unknown field {name!r}; allowed: {allowed}")
    return k


def _convert(key: str, raw: str, spec: str) -> Any:
    raw = raw.strip()
    if not raw:
        raise UsageError(f"--compare {spec}: an empty value; write FIELD=V1,V2")
    if key in ("backend", "model"):
        return raw.lower() if key == "backend" else raw
    f = COMPARABLE[key]
    if f.kwargs.get("action") == "store_true":
        if raw.lower() not in _BOOL:
            raise UsageError(f"--compare {spec}: {key} takes true or false, not {raw!r}")
        return _BOOL[raw.lower()]
    conv = f.kwargs.get("type", str)
    try:
        value = conv(raw)
    except ValueError:
        kind = getattr(conv, "__name__", "value")
        raise UsageError(f"--compare {spec}: {key}: {raw!r} is not a valid {kind}") from None
    choices = f.kwargs.get("choices")
    if choices and value not in choices:
        raise UsageError(f"--compare {spec}: {key}: {raw!r}; allowed: {', '.join(choices)}")
    return value


def _parse(spec: str) -> tuple[str, list[Any]]:
    name, sep, values = spec.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--compare {spec}: write FIELD=V1,V2 (e.g. temperature=0.2,0.9)")
    key = _key(name, spec)
    out = [_convert(key, v, spec) for v in values.split(",")]
    if len(set(map(repr, out))) != len(out):
        raise UsageError(f"--compare {spec}: a value is repeated")
    return key, out


def expand_grid(specs: list[str]) -> list[dict[str, Any]]:
    """The variants of ``--compare`` specs: one dict of varied values each, in grid order."""
    axes: list[tuple[str, list[Any]]] = []
    total = 1
    for spec in specs:
        key, values = _parse(spec)
        if any(k == key for k, _ in axes):
            raise UsageError(f"--compare {spec}: {key} is already compared; list its values once")
        total *= len(values)
        if total > MAX_VARIANTS:
            raise UsageError(
                f"--compare {spec}: the grid would have {total} variants; at most "
                f"{MAX_VARIANTS} (the product of every --compare)"
            )
        axes.append((key, values))
    return [dict(zip([k for k, _ in axes], combo, strict=True)) for combo in _product(axes)]


def _product(axes: list[tuple[str, list[Any]]]) -> list[tuple[Any, ...]]:
    return list(itertools.product(*[v for _, v in axes]))


def variant_fields(varied: dict[str, Any]) -> dict[str, Any]:
    """The request fields a variant sets (``backend`` is not one; thinking and citations
    shaped as the v2 objects)."""
    out: dict[str, Any] = {}
    for k, v in varied.items():
        if k == "backend":
            continue
        if k == "thinking":
            out["thinking"] = {"type": "disabled" if v == "off" else "enabled"}
        elif k == "citations":
            out["citation_options"] = {"mode": v}
        else:
            out[k] = v
    return out
