"""Citations computed from the reply and the sources (no model needed)."""

from __future__ import annotations

from nbchat.backends.grounding import CitationTracker, compute_citations, tool_sources
from nbchat.protocol.request import normalize_documents

DOCS = normalize_documents(
    [
        {"data": {"title": "Tall penguins", "snippet": "Emperor penguins are the tallest."}},
        {
            "data": {
                "title": "Penguin habitats",
                "snippet": "Emperor penguins only live in Antarctica.",
            }
        },
    ]
)


def test_spans_match_reply_text_with_code_point_offsets() -> None:
    reply = "Ça va: the tallest penguins are Emperor penguins. They only live in Antarctica."
    cits = compute_citations(reply, DOCS)
    assert cits, "expected citations"
    for c in cits:
        assert reply[c["start"] : c["end"]] == c["text"]
        assert c["type"] == "TEXT_CONTENT"
        for s in c["sources"]:
            assert s["type"] == "document"
            assert s["document"]["id"] == s["id"]
    texts = [c["text"] for c in cits]
    assert "only live in Antarctica" in texts
    # "Emperor penguins" is in both documents: both are sources
    emperor = next(c for c in cits if c["text"].startswith("Emperor penguins"))
    assert {s["id"] for s in emperor["sources"]} == {"doc:0", "doc:1"}
    # offsets are code points: the leading "Ç" counts as one
    assert reply.index("Antarctica") < cits[-1]["end"] <= len(reply)


def test_source_carries_id_and_data() -> None:
    cits = compute_citations("They only live in Antarctica.", DOCS)
    src = cits[0]["sources"][0]
    assert src == {
        "type": "document",
        "id": "doc:1",
        "document": {
            "id": "doc:1",
            "title": "Penguin habitats",
            "snippet": "Emperor penguins only live in Antarctica.",
        },
    }


def test_no_citation_for_stop_words_or_unrelated_text() -> None:
    assert compute_citations("It is in the of and are.", DOCS) == []
    assert compute_citations("Bananas grow on plants.", DOCS) == []
    assert compute_citations("anything", []) == []


def test_tracker_incremental_equals_batch_and_emits_early() -> None:
    reply = "Emperor penguins are the tallest. Also, they only live in Antarctica. Bye now friend."
    batch = compute_citations(reply, DOCS)
    tr = CitationTracker(DOCS)
    got, first_at = [], None
    for i in range(0, len(reply), 3):  # token-like pieces
        new = tr.feed(reply[i : i + 3])
        if new and first_at is None:
            first_at = i
        got += new
    got += tr.finish()
    assert got == batch
    # the first citation is emitted before the text ends (FAST semantics)
    assert first_at is not None and first_at < len(reply) - 10


def test_tool_sources_ids_and_shapes() -> None:
    messages = [
        {"role": "user", "content": "old"},
        {"role": "tool", "tool_call_id": "old_1", "content": "ignored (before the last user turn)"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "w_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "w_1", "content": '{"temperature": "24C in Madrid"}'},
        {
            "role": "tool",
            "tool_call_id": "w_2",
            "content": [
                {"type": "text", "text": "sunny in Lisbon"},
                {"type": "document", "document": {"id": "mine", "data": {"out": "x"}}},
            ],
        },
    ]
    src = tool_sources(messages)
    assert [s["id"] for s in src] == ["w_1:0", "w_2:0", "mine"]
    assert src[0]["data"] == {"temperature": "24C in Madrid"}
    assert src[1]["data"] == {"text": "sunny in Lisbon"}
    cits = compute_citations("It is 24C in Madrid today.", src)
    assert cits and cits[0]["sources"][0] == {
        "type": "tool",
        "id": "w_1:0",
        "tool_output": {"temperature": "24C in Madrid"},
    }
