"""OpenAI stream chunks -> v2 events (pure; the mapping is documented in the package)."""

from __future__ import annotations

import re
from typing import Any

from ..reasoning import reasoning_piece

_TOKEN_ID = re.compile(r"token_id:(\d+)\Z")
# A reply "ends naturally" when its last visible character closes a sentence or a structure.
_NATURAL_END = set(".!?…。！？)]}\"'`*>|")


# -- response translation (pure) ------------------------------------------------------------------
def stop_reason_rule(
    finish_reason: str | None,
    choice: dict[str, Any],
    stop_sequences: list[str] | None,
    text: str,
) -> str:
    """COMPLETE or STOP_SEQUENCE for an OpenAI ``finish_reason: "stop"``.

    OpenAI folds "end of sequence" and "a stop sequence matched" into one ``stop``. The rule:

    1. no stop sequences were requested -> COMPLETE;
    2. the server says which stop matched -- vLLM's ``stop_reason`` / SGLang's ``matched_stop``
       (a string: that stop sequence; a number or null: an end-of-sequence token) -> exact;
    3. otherwise (llama.cpp, Ollama, OpenAI send nothing) -> STOP_SEQUENCE when the text does
       not end naturally, i.e. it is empty or its last non-space character is not one of
       ``. ! ? … ) ] } " ' ` * > |`` (sentence or structure end); else COMPLETE.
       A heuristic: a model that stops by itself ends a sentence; a stop sequence cuts it.
    """
    if not stop_sequences:
        return "COMPLETE"
    for key in ("stop_reason", "matched_stop"):
        if key in choice:
            value = choice[key]
            return (
                "STOP_SEQUENCE"
                if isinstance(value, str) and value in stop_sequences
                else "COMPLETE"
            )
    stripped = text.rstrip()
    if not stripped or stripped[-1] not in _NATURAL_END:
        return "STOP_SEQUENCE"
    return "COMPLETE"


def _logprob_item(lp: Any) -> dict[str, Any] | None:
    """OpenAI ``choice.logprobs`` -> one v2 LogprobItem ``{token_ids, text, logprobs}``."""
    if not isinstance(lp, dict):
        return None
    entries = [e for e in lp.get("content") or () if isinstance(e, dict)]
    if not entries:
        return None
    tokens = [str(e.get("token", "")) for e in entries]
    ids = [_TOKEN_ID.match(t) for t in tokens]
    item: dict[str, Any] = {
        "token_ids": [int(m.group(1)) for m in ids] if all(ids) else [],
        "text": "".join(tokens) if not all(ids) else "",
        # float(): llama-cpp-python may hand out numpy floats
        "logprobs": [float(e.get("logprob") or 0.0) for e in entries],
    }
    return item


class ChunkTranslator:
    """Feed decoded OpenAI stream chunks; get v2 events. Pure: no I/O.

    ``start()`` first, then ``feed(chunk)`` per chunk, then ``finish()`` at ``[DONE]``/EOF.
    """

    def __init__(self, request: dict[str, Any], id: str | None = None) -> None:
        from ...protocol.events import StreamBuilder

        self.builder = StreamBuilder(id)
        self.request = request
        self.stop_sequences = list(request.get("stop_sequences") or [])
        self.text = ""
        self.finish_reason: str | None = None
        self.last_choice: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.chunks = 0  # content/tool chunks: the token estimate when no usage arrives
        self.calls = 0
        self._call_key: Any = None  # OpenAI index of the open tool call
        self.error: tuple[str, str] | None = None
        self.ended = False
        mode = str((request.get("citation_options") or {}).get("mode") or "ACCURATE").upper()
        self._sources = self._citation_sources() if mode not in ("OFF", "DISABLED") else []
        self._fast = mode == "FAST"
        self._tracker: Any = None
        if self._sources and self._fast:
            from ..grounding import CitationTracker

            self._tracker = CitationTracker(self._sources)

    def _citation_sources(self) -> list[dict[str, Any]]:
        from ...protocol.request import normalize_documents
        from ..grounding import tool_sources

        return normalize_documents(self.request.get("documents")) + tool_sources(
            self.request.get("messages") or []
        )

    def start(self) -> dict[str, Any]:
        return self.builder.start()

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self.ended:
            return []
        out: list[dict[str, Any]] = []
        err = chunk.get("error")
        if err is not None:  # vLLM/TGI report failures inside the stream
            if isinstance(err, dict):
                msg = str(err.get("message") or err)
                kind = str(err.get("type") or err.get("code") or "SERVER_ERROR")
            else:
                msg, kind = str(err), "SERVER_ERROR"
            self.error = (msg, kind)
            return out
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is never requested; be safe
            delta = choice.get("delta") or {}
            thought = reasoning_piece(delta)  # vLLM / llama.cpp reasoning parsers
            if thought is not None:
                out += self._thinking(thought)
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                out += self._text(piece, _logprob_item(choice.get("logprobs")))
            for tc in delta.get("tool_calls") or ():
                out += self._tool_call(tc)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.last_choice = choice
        return out

    def _thinking(self, piece: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._call_key is not None:
            out.append(self.builder.tool_call_end())
            self._call_key = None
        self.chunks += 1
        return out + self.builder.thinking(piece)

    def _text(self, piece: str, logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
        b = self.builder
        out: list[dict[str, Any]] = []
        if self._call_key is not None:  # text after a tool call: close the call first
            out.append(b.tool_call_end())
            self._call_key = None
        self.chunks += 1
        self.text += piece
        out += b.text(piece, logprobs)
        if self._tracker is not None:
            for cit in self._tracker.feed(piece):
                out += b.citation(cit)
        return out

    def _tool_call(self, tc: dict[str, Any]) -> list[dict[str, Any]]:
        b = self.builder
        out: list[dict[str, Any]] = []
        fn = tc.get("function") or {}
        args = fn.get("arguments") or ""
        key = tc.get("index", 0)
        self.chunks += 1
        if self._call_key is None or key != self._call_key:
            # A new call (llama.cpp repeats id and name on every chunk of the same index).
            out += self._close_text()
            if self._call_key is not None:
                out.append(b.tool_call_end())
            name = fn.get("name") or ""
            call_id = tc.get("id") or f"{name or 'call'}_{self.builder.id[:8]}_{self.calls}"
            out.append(b.tool_call_start(call_id, name, ""))
            self._call_key = key
            self.calls += 1
        if args:
            out.append(b.tool_call_delta(args))
        return out

    def _close_text(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._tracker is not None:
            for cit in self._tracker.finish():
                out += self.builder.citation(cit)
        out += self.builder.close_content()
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Citations (ACCURATE) and message-end; call at [DONE] or when the body ended."""
        if self.ended:
            return []
        from ...protocol.events import usage_dict

        b = self.builder
        self.ended = True
        if self.error is not None:
            msg, kind = self.error
            return b.end("ERROR", error=msg, error_type=kind)
        out: list[dict[str, Any]] = []
        if self._call_key is not None:
            out.append(b.tool_call_end())
            self._call_key = None
        if self._sources and self.text:
            if self._tracker is not None:
                cits = self._tracker.finish()
            else:
                from ..grounding import compute_citations

                cits = compute_citations(self.text, self._sources)
            for cit in cits:
                out += b.citation(cit)
        if self.usage:
            usage = usage_dict(
                int(self.usage.get("prompt_tokens") or 0),
                int(self.usage.get("completion_tokens") or 0),
            )
        else:
            usage = usage_dict(0, self.chunks)
        reason = self.finish_reason
        if reason == "content_filter":
            out += b.end(
                "ERROR",
                usage=usage,
                error="the server's content filter stopped the generation",
                error_type="CONTENT_FILTER",
            )
            return out
        if self.calls:
            mapped = "TOOL_CALL"  # some servers (Ollama) say "stop" after tool calls
        elif reason == "length":
            mapped = "MAX_TOKENS"
        elif reason in ("tool_calls", "function_call"):
            mapped = "TOOL_CALL"
        elif reason == "stop":
            mapped = stop_reason_rule(reason, self.last_choice, self.stop_sequences, self.text)
        else:
            mapped = "COMPLETE"
        out += b.end(mapped, usage=usage)
        return out
