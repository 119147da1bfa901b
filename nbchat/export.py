"""Conversations in and out: JSON and JSONL (lossless round trip); DataFrame and CSV (views).

* JSON: ``{"format": "nbchat.conversation", "version": 1, "system", "params", "turns"}``;
  a plain JSON list of v2 messages is read too.
* JSONL: the same header (without ``turns``) on the first line, then one turn per line, so
  a long conversation can be appended to and streamed.
* DataFrame: one row per message (`COLUMNS`). ``thinking`` holds an assistant's thinking;
  ``images`` a short placeholder per sent image (``[image 640×480 png 48 KB]``), and the
  ``message`` column has the same placeholders instead of the base64 (only JSON keeps the
  images; `from_dataframe` turns them into that text). Columns holding structures
  (``images``, ``tool_calls``, ``citations``, ``params``, ``message``) hold **JSON text**, and token counts are integers
  (pandas ``Int64``), so ``df.to_csv()`` and ``pd.read_csv()`` keep every value exactly.
  `from_dataframe` reads such a frame back (JSON only: no Python literal is ever evaluated);
  an edited ``text`` cell replaces that message's text.

Every function takes the conversation class it builds (``cls``), so this module needs only
`Turn` and the conversation's public API.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .images import PLACEHOLDER_PREFIX, count_images, placeholder, strip_images
from .protocol.messages import display_text, thinking_text
from .turn import Turn

__all__ = [
    "FORMAT",
    "VERSION",
    "COLUMNS",
    "to_dict",
    "from_dict",
    "to_json",
    "from_json",
    "to_jsonl",
    "from_jsonl",
    "save",
    "load",
    "to_dataframe",
    "from_dataframe",
    "to_csv",
]

FORMAT = "nbchat.conversation"
VERSION = 1
COLUMNS = (
    "turn",
    "role",
    "text",
    "thinking",
    "images",
    "tool_plan",
    "tool_calls",
    "tool_call_id",
    "citations",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "ttft",
    "total",
    "tokens_per_second",
    "params",
    "status",
    "cell_id",
    "execution_count",
    "response_id",
    "turn_id",
    "message",
)
_JSON_COLUMNS = ("images", "tool_calls", "citations", "params", "message")
_INT_COLUMNS = ("input_tokens", "output_tokens", "execution_count")


# -- JSON / JSONL --------------------------------------------------------------------------------
def _header(conv: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "system": copy.deepcopy(conv.system),
        "params": _jsonable(conv.params),
    }


def to_dict(conv: Any) -> dict[str, Any]:
    with conv.lock:
        return {**_header(conv), "turns": [t.to_dict() for t in conv.turns]}


def from_dict(cls: Any, d: Any) -> Any:
    if isinstance(d, list):  # a plain message list
        return cls(d)
    conv = cls(system=d.get("system"), **(d.get("params") or {}))
    for t in d.get("turns") or []:
        conv.add_turn(Turn.from_dict(t))
    return conv


def to_json(conv: Any, indent: int | None = None) -> str:
    return json.dumps(to_dict(conv), ensure_ascii=False, indent=indent, default=repr)


def from_json(cls: Any, text: str) -> Any:
    return from_dict(cls, json.loads(text))


def to_jsonl(conv: Any) -> str:
    """The header line, then one line per turn (each line a JSON object)."""
    d = to_dict(conv)
    turns = d.pop("turns")
    lines = [json.dumps(d, ensure_ascii=False, default=repr)]
    lines += [json.dumps(t, ensure_ascii=False, default=repr) for t in turns]
    return "\n".join(lines) + "\n"


def from_jsonl(cls: Any, text: str) -> Any:
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not rows or not isinstance(rows[0], dict) or rows[0].get("format") != FORMAT:
        from .errors import ValidationError

        raise ValidationError("jsonl", text[:80], f'a first line {{"format": "{FORMAT}", ...}}')
    return from_dict(cls, {**rows[0], "turns": rows[1:]})


def save(conv: Any, path: Any) -> None:
    """Write JSON (or JSONL when the name ends with .jsonl), UTF-8."""
    p = Path(path)
    text = to_jsonl(conv) if p.suffix.lower() == ".jsonl" else to_json(conv, indent=1)
    p.write_text(text, encoding="utf-8")


def load(cls: Any, path: Any) -> Any:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    return from_jsonl(cls, text) if p.suffix.lower() == ".jsonl" else from_json(cls, text)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


# -- DataFrame / CSV -----------------------------------------------------------------------------
def to_dataframe(conv: Any) -> Any:
    """One row per message (the system message has turn -1); see the module docstring."""
    import pandas as pd  # lazy: pandas is an optional dependency

    rows: list[dict[str, Any]] = []
    with conv.lock:
        system = conv.system
        if system:
            rows.append(_row(-1, {"role": "system", "content": copy.deepcopy(system)}, None))
        for i, t in enumerate(conv.turns):
            snap = t.to_dict()
            for m in snap["input"] + snap["output"]:
                rows.append(_row(i, m, snap))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in _INT_COLUMNS:
        df[col] = pd.array([_int(v) for v in df[col]], dtype="Int64")
    return df


def to_csv(conv: Any, path: Any) -> Any:
    """Write `to_dataframe(conv)` as CSV (UTF-8, no index); return the DataFrame."""
    df = to_dataframe(conv)
    df.to_csv(path, index=False)
    return df


def _json_cell(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=repr)


def _row(turn_no: int, m: dict[str, Any], snap: dict[str, Any] | None) -> dict[str, Any]:
    snap = snap or {}
    usage = snap.get("usage") or {}
    tok = usage.get("tokens") or usage.get("billed_units") or {}
    timings = snap.get("timings") or {}
    cell = snap.get("cell") or {}
    rids = snap.get("response_ids") or []
    return {
        "turn": turn_no,
        "role": m.get("role"),
        "text": display_text(m),
        "thinking": thinking_text(m),
        "images": _json_cell(_images(m)),
        "tool_plan": m.get("tool_plan"),
        "tool_calls": _json_cell(m.get("tool_calls")),
        "tool_call_id": m.get("tool_call_id"),
        "citations": _json_cell(m.get("citations")),
        "finish_reason": snap.get("finish_reason"),
        "input_tokens": tok.get("input_tokens"),
        "output_tokens": tok.get("output_tokens"),
        "ttft": timings.get("ttft"),
        "total": timings.get("total"),
        "tokens_per_second": timings.get("tokens_per_second"),
        "params": _json_cell(snap.get("params")) if snap else None,
        "status": snap.get("status", "complete") if snap else "complete",
        "cell_id": cell.get("cell_id"),
        "execution_count": cell.get("execution_count"),
        "response_id": rids[-1] if rids else None,
        "turn_id": snap.get("id"),
        "message": _json_cell(strip_images(m)),
    }


def _images(m: dict[str, Any]) -> list[str] | None:
    """A short placeholder per image block (``[image 640×480 png 48 KB]``), or None."""
    blocks = count_images([m])
    return [placeholder(b) for b in blocks] or None


def from_dataframe(cls: Any, df: Any) -> Any:
    """Rebuild a conversation from `to_dataframe` output (possibly edited, or read back from
    CSV). Without a ``message`` column, rows are built from role/text/tool_calls/
    tool_call_id/citations."""
    conv = cls()
    records = df.to_dict(orient="records")
    turns: dict[Any, Turn] = {}
    order: list[Any] = []
    for i, r in enumerate(records):
        msg = _message_from_row(r, i)
        turn_no = _scalar(r.get("turn"))
        if msg["role"] == "system" and (turn_no is None or turn_no == -1):
            conv.system = msg.get("content")
            continue
        key = turn_no if turn_no is not None else len(order)
        t = turns.get(key)
        if t is None or (msg["role"] == "user" and turn_no is None):
            t = _turn_from_row(r, i)
            turns[key] = t
            order.append(key)
        rid = _scalar(r.get("response_id"))
        if rid and rid not in t.response_ids:
            t.response_ids.append(rid)
        if msg["role"] == "user" and not t.output:
            t.input.append(msg)
        else:
            t.output.append(msg)
            if msg["role"] == "assistant":
                t.citations.extend(copy.deepcopy(msg.get("citations") or []))
    for key in order:
        conv.add_turn(turns[key])
    return conv


def _turn_from_row(r: dict[str, Any], row: int) -> Turn:
    cell_id, count = _scalar(r.get("cell_id")), _int(r.get("execution_count"))
    t = Turn(
        params=_json_column(r, "params", row) or {},
        status=_scalar(r.get("status")) or "complete",
        id=_scalar(r.get("turn_id")),
        finish_reason=_scalar(r.get("finish_reason")),
        timings={
            k: _scalar(r.get(k))
            for k in ("ttft", "total", "tokens_per_second")
            if _scalar(r.get(k)) is not None
        },
        cell={"cell_id": cell_id, "execution_count": count}
        if cell_id is not None or count is not None
        else None,
    )
    inp, out = _int(r.get("input_tokens")), _int(r.get("output_tokens"))
    if inp is not None or out is not None:
        t.usage = {"tokens": {"input_tokens": inp, "output_tokens": out}}
    if t.status == "running":
        t.status, t.error = "cancelled", "saved while running"
    return t


def _scalar(v: Any) -> Any:
    """None for NaN/NA/None; numpy scalars as Python values."""
    if v is None:
        return None
    try:
        if v != v:  # NaN
            return None
    except (TypeError, ValueError):  # pd.NA compares ambiguously
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return v.item()
        except (AttributeError, ValueError):
            return v
    return v


def _int(v: Any) -> int | None:
    v = _scalar(v)
    if v is None:
        return None
    if isinstance(v, float) and not v.is_integer():
        return None
    return int(v)


def _maybe_json(v: Any) -> Any:
    """JSON text -> its value; anything else (or text that is not JSON) as it is."""
    v = _scalar(v)
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _json_column(r: dict[str, Any], key: str, row: int) -> Any:
    """A structure column: JSON text (as written by to_dataframe) or an object put there in
    pandas. Anything else is refused, naming the row and column (nothing is evaluated)."""
    v = _scalar(r.get(key))
    if v is None or isinstance(v, (dict, list)):
        return v
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            return json.loads(v)
        except json.JSONDecodeError as exc:
            from .errors import ValidationError

            raise ValidationError(
                f"rows[{row}].{key}", v, f"JSON text, as to_dataframe() writes it ({exc.msg})"
            ) from None
    return v


def _message_from_row(r: dict[str, Any], row: int = 0) -> dict[str, Any]:
    msg = _json_column(r, "message", row)
    text = _scalar(r.get("text"))
    if isinstance(msg, dict) and msg.get("role"):
        msg = copy.deepcopy(msg)
        # An edited text cell wins over the stored message (edit history in pandas).
        if (
            text is not None
            and msg["role"] in ("user", "system", "assistant")
            and text != display_text(msg)
        ):
            if isinstance(msg.get("content"), list):
                others = [
                    b
                    for b in msg["content"]
                    if isinstance(b, dict) and b.get("type") not in (None, "text")
                ]
                msg["content"] = others + [{"type": "text", "text": text}]
            else:
                msg["content"] = text
        return _unstrip(msg)
    role = _scalar(r.get("role")) or "user"
    msg = {"role": role}
    if role == "tool":
        msg["tool_call_id"] = _scalar(r.get("tool_call_id")) or ""
        data = _maybe_json(text)
        msg["content"] = [
            {
                "type": "document",
                "document": {"data": data if isinstance(data, dict) else {"result": text}},
            }
        ]
        return msg
    if text:
        msg["content"] = text if role != "assistant" else [{"type": "text", "text": text}]
    plan = _scalar(r.get("tool_plan"))
    if plan:
        msg["tool_plan"] = plan
    for key in ("tool_calls", "citations"):
        v = _json_column(r, key, row)
        if v:
            msg[key] = v
    return msg


def _unstrip(msg: dict[str, Any]) -> dict[str, Any]:
    """An image the DataFrame holds only as a placeholder comes back as that placeholder
    text (said, not silently dropped): the image itself is only in the JSON export."""
    content = msg.get("content")
    if isinstance(content, list):
        for i, b in enumerate(content):
            url = (b.get("image_url") or {}).get("url") if isinstance(b, dict) else None
            if isinstance(url, str) and url.startswith(PLACEHOLDER_PREFIX):
                content[i] = {"type": "text", "text": url}
    return msg
