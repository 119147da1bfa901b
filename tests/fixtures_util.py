"""Helpers for the recorded Cohere captures in tests/fixtures/cohere-wire (see its INDEX.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "cohere-wire"


def _names(suffix: str) -> list[str]:
    return sorted(p.name[: -len(suffix)] for p in FIXTURES.glob("*" + suffix))


def stream_names() -> list[str]:
    """Captures with a streamed body (.sse) and the SDK's parse of it."""
    return _names(".sse")


def response_names() -> list[str]:
    """Non-stream captures (.response.json), errors included."""
    return _names(".response.json")


def request_names() -> list[str]:
    return _names(".request.json")


def load(name: str, suffix: str) -> Any:
    return json.loads((FIXTURES / (name + suffix)).read_text(encoding="utf-8"))


def sse_bytes(name: str) -> bytes:
    return (FIXTURES / (name + ".sse")).read_bytes()


def status(name: str) -> int:
    return int(load(name, ".meta.json")["http"]["status"])


def drop_nulls(obj: Any) -> Any:
    """What the SDK's model_dump(exclude_none=True) does to a raw wire object."""
    if isinstance(obj, dict):
        return {k: drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [drop_nulls(v) for v in obj]
    return obj


def same(a: Any, b: Any, path: str = "$") -> None:
    """Assert deep equality where 8 == 8.0 (the SDK turned token counts into floats)."""
    if isinstance(a, bool) or isinstance(b, bool):
        assert a is b, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
        assert a == b, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"
