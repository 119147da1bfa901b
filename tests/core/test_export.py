"""export: JSON/JSONL round trip; DataFrame/CSV views with JSON columns and integer counts."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_conversation import rich_conversation  # noqa: E402

from nbchat.conversation import Conversation  # noqa: E402
from nbchat.errors import ValidationError  # noqa: E402


def test_jsonl_round_trip(tmp_path: Path) -> None:
    conv = rich_conversation()
    text = conv.to_jsonl()
    lines = text.splitlines()
    assert len(lines) == 1 + len(conv)  # header, then one line per turn
    back = Conversation.from_jsonl(text)
    assert back.to_dict() == conv.to_dict()
    conv.save(tmp_path / "c.jsonl")
    assert (tmp_path / "c.jsonl").read_text(encoding="utf-8") == text
    assert Conversation.load(tmp_path / "c.jsonl").to_dict() == conv.to_dict()
    conv.save(tmp_path / "c.json")
    assert Conversation.load(tmp_path / "c.json").to_dict() == conv.to_dict()
    with pytest.raises(ValidationError):
        Conversation.from_jsonl('{"not": "a header"}\n')


def test_csv_has_json_columns_and_integer_counts(tmp_path: Path) -> None:
    import json

    import pandas as pd

    conv = rich_conversation()
    path = tmp_path / "c.csv"
    conv.to_csv(path)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    counted = [r for r in rows if r["output_tokens"]]
    assert counted and all(r["output_tokens"].isdigit() for r in counted)  # "12", not "12.0"
    for r in rows:
        assert json.loads(r["message"])["role"] == r["role"]  # JSON, not a Python repr
        if r["tool_calls"]:
            assert isinstance(json.loads(r["tool_calls"]), list)
    back = Conversation.from_dataframe(pd.read_csv(path))
    assert back.messages == conv.messages
    counts = [t.usage["tokens"] for t in back if t.usage]
    assert counts and all(type(v) is int for c in counts for v in c.values() if v is not None)


def test_python_literals_in_cells_are_never_evaluated() -> None:
    import pandas as pd

    df = pd.DataFrame(
        [
            {
                "turn": 0,
                "role": "user",
                "text": "hi",
                "message": "{'role': 'user', 'content': 'x'}",
            },
            {"turn": 0, "role": "assistant", "text": "ok", "tool_calls": "[{'id': 1}]"},
        ]
    )
    with pytest.raises(ValidationError) as info:  # a Python repr is not JSON: refused
        Conversation.from_dataframe(df)
    assert info.value.field == "rows[0].message"
    df.loc[0, "message"] = None
    with pytest.raises(ValidationError) as info:
        Conversation.from_dataframe(df)
    assert info.value.field == "rows[1].tool_calls"
    df.loc[1, "tool_calls"] = None
    assert Conversation.from_dataframe(df).messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]
