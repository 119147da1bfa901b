"""Citations for the embedded engine: spans of the reply that repeat document text.

The small local model cannot emit citations itself, so they are computed from the answer and
the sources, the way a reader would check them: a citation is a run of consecutive words of
the reply that occurs, word for word (case-insensitive), in a document or a tool result.

* Offsets are code-point offsets into the reply text (Python ``str`` indices), like Cohere's.
* A run must hold at least two words of which one is not a stop word, or be a single
  distinctive word (a number, or a non-stop word of 6+ letters); shorter runs are noise.
* The scan is greedy from left to right and takes the longest run at each position, so the
  batch function (`compute_citations`) and the incremental one (`CitationTracker`, used for
  FAST mode) give exactly the same citations; the tracker emits a citation as soon as the word
  after it shows the run cannot grow.

Sources: ``{"type": "document", "id", "document": {"id", **data}}`` for request documents
and ``{"type": "tool", "id": "<tool_call_id>:N", "tool_output": data}`` for tool results
(a source dict passed in with ``"type": "tool"``).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["compute_citations", "CitationTracker", "tool_sources", "STOP_WORDS"]

_WORD = re.compile(r"\w+(?:['’]\w+)*")

STOP_WORDS = frozenset(
    """a an and are as at be been being but by can could did do does for from had has have he her
    him his how i if in into is it its me my no not of on or our she so than that the their them
    then there these they this those to too up us was we were what when where which who why will
    with would you your yes also just about over very""".split()
)


def _words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0).casefold(), m.start(), m.end()) for m in _WORD.finditer(text)]


def _flatten(value: Any) -> str:
    """All text of a document's data (keys are not part of the text)."""
    if isinstance(value, dict):
        return "\n".join(_flatten(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(_flatten(v) for v in value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _source(doc: dict[str, Any]) -> dict[str, Any]:
    data = doc.get("data") or {}
    if doc.get("type") == "tool":
        return {"type": "tool", "id": doc["id"], "tool_output": data}
    return {"type": "document", "id": doc["id"], "document": {"id": doc["id"], **data}}


def tool_sources(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results after the last user message, as citable sources ``<tool_call_id>:N``.

    String content that parses as a JSON object is used as the output dict; other text becomes
    ``{"text": ...}``; a document block keeps its data (and its own id when it has one).
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    out: list[dict[str, Any]] = []
    for m in messages[last_user + 1 :]:
        if m.get("role") != "tool":
            continue
        call_id = str(m.get("tool_call_id", "tool"))
        content = m.get("content")
        blocks = [content] if isinstance(content, str) else list(content or [])
        for n, block in enumerate(blocks):
            doc_id = f"{call_id}:{n}"
            if isinstance(block, str):
                data = _as_data(block)
            elif isinstance(block, dict) and "document" in block:
                document = block.get("document") or {}
                data = _as_data(document.get("data"))
                if isinstance(document.get("id"), str) and document["id"]:
                    doc_id = document["id"]
            elif isinstance(block, dict):
                data = _as_data(block.get("text", ""))
            else:
                continue
            out.append({"type": "tool", "id": doc_id, "data": data})
    return out


def _as_data(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"text": value}
        if isinstance(parsed, dict):
            return parsed
        return {"output": value}
    if value is None:
        return {}
    return {"output": json.dumps(value, ensure_ascii=False)}


class _Index:
    """Word sequences of every source, with positions of each word for fast run extension."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.seqs: list[list[str]] = []
        self.pos: list[dict[str, list[int]]] = []
        for doc in documents:
            seq = [w for w, _, _ in _words(_flatten(doc.get("data") or {}))]
            where: dict[str, list[int]] = {}
            for i, w in enumerate(seq):
                where.setdefault(w, []).append(i)
            self.seqs.append(seq)
            self.pos.append(where)

    def longest(self, words: list[str], i: int) -> tuple[int, list[int]]:
        """Longest n such that words[i:i+n] occurs in some source; and the sources holding it."""
        best, holders = 0, []
        for d, (seq, where) in enumerate(zip(self.seqs, self.pos, strict=True)):
            n_doc = 0
            for start in where.get(words[i], ()):
                n = 1
                while (
                    i + n < len(words) and start + n < len(seq) and seq[start + n] == words[i + n]
                ):
                    n += 1
                n_doc = max(n_doc, n)
            if n_doc > best:
                best, holders = n_doc, [d]
            elif n_doc and n_doc == best:
                holders.append(d)
        return best, holders


def _acceptable(words: list[str]) -> bool:
    content = [w for w in words if w not in STOP_WORDS]
    if len(words) >= 2:
        return bool(content)
    w = words[0]
    return w.isdigit() or (bool(content) and len(w) >= 6)


class CitationTracker:
    """Incremental citations for FAST mode: `feed(piece)` returns citations now complete.

    `finish()` returns the rest (a run touching the end of the text). The union of everything
    returned equals `compute_citations(full_text, documents)`.
    """

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self._index = _Index(documents)
        self.text = ""
        self._next = 0  # word index where the greedy scan resumes; earlier words are settled

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        return self._scan(final=False)

    def finish(self) -> list[dict[str, Any]]:
        return self._scan(final=True)

    def _scan(self, final: bool) -> list[dict[str, Any]]:
        if not self._index.documents:
            return []
        words = _words(self.text)
        if not final and words and words[-1][2] == len(self.text):
            words = words[:-1]  # the last word may still grow with the next token
        keys = [w for w, _, _ in words]
        out: list[dict[str, Any]] = []
        i = self._next
        while i < len(keys):
            n, holders = self._index.longest(keys, i)
            if not final and i + n >= len(keys):
                break  # the run reaches the end of what we know: it may still grow
            if n and _acceptable(keys[i : i + n]):
                start, end = words[i][1], words[i + n - 1][2]
                out.append(
                    {
                        "start": start,
                        "end": end,
                        "text": self.text[start:end],
                        "sources": [_source(self._index.documents[d]) for d in holders],
                        "type": "TEXT_CONTENT",
                    }
                )
                i += n
            else:
                i += 1
            self._next = i
        return out


def compute_citations(text: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Citations of `text` against normalized documents (``{"id", "data", "type"?}``)."""
    tracker = CitationTracker(documents)
    tracker.text = text
    return tracker.finish()
