"""OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama, TGI, OpenAI) as a v2 backend.

``OpenAIBackend`` translates a validated Cohere v2 request into ``POST {base}/v1/chat/completions``
(``stream: true``) and the OpenAI SSE chunks back into the exact v2 event sequence, so the
magic, the panel, conversations and ``nbchat serve`` work unchanged on any such server.

Request mapping (v2 -> OpenAI)
------------------------------
* messages: system/user/assistant/tool. Content blocks become text (user ``image_url`` blocks
  stay OpenAI image parts); assistant ``tool_calls`` keep their ids; tool results keep
  ``tool_call_id`` (document blocks are sent as their JSON data). Thinking blocks, ``tool_plan``
  and ``citations`` of earlier turns are not sent (OpenAI has no field for them).
* One system message comes first: the request's system text, the ``safety_mode`` instruction,
  the JSON instruction and the ``documents`` -- built by ``prompting.build_system_prompt``, the
  very text the embedded engine uses. Tools go in the native ``tools`` field instead.
* ``temperature`` -> ``temperature``; ``p`` -> ``top_p``; ``seed``, ``max_tokens`` as is;
  ``stop_sequences`` -> ``stop``.
* ``k`` -> ``top_k`` (an extension that vLLM, llama.cpp, SGLang and TGI accept; ``k = 0``, v2's
  "disabled", is sent as ``-1``, which both vLLM and llama.cpp read as disabled). Ollama's
  OpenAI endpoint ignores it; api.openai.com rejects unknown fields, so it is not sent there.
* ``frequency_penalty`` / ``presence_penalty``: sent unchanged (identity). Both APIs define them
  the same way -- an additive logit penalty, per occurrence resp. once per seen token -- and
  v2's 0..1 is a sub-range of OpenAI's -2..2, so the identity keeps the exact strength the user
  asked for (the embedded engine passes them to llama.cpp unchanged too). Scaling 0..1 onto
  0..2 or -2..2 would silently double the penalty or turn 0.0 into a negative one.
* ``logprobs: true`` -> ``logprobs: true, top_logprobs: 1`` (llama.cpp only returns logprobs
  when ``top_logprobs`` is set).
* ``tools`` -> ``tools`` (``strict_tools`` -> ``function.strict: true``). ``tool_choice``:
  ``NONE`` -> ``"none"``; ``REQUIRED`` -> ``"required"``, except with exactly one tool where the
  equivalent named choice ``{"type": "function", "function": {"name": ...}}`` is sent: it means
  the same everywhere and llama.cpp's server only constrains output for the named form.
* ``response_format``: ``{"type": "json_object"}`` -> ``{"type": "json_object"}``; with a
  ``json_schema`` -> OpenAI's ``{"type": "json_schema", "json_schema": {"name": "response",
  "schema": ...}}`` (vLLM, OpenAI, Ollama). llama-cpp-python's server rejects that type (HTTP
  422) and wants ``{"type": "json_object", "schema": ...}`` instead: on a 400/422/500 naming response_format the
  request is resent once in that form and the backend remembers it
  (``response_format_style="llama.cpp"`` selects it from the start).
* ``thinking`` and ``priority`` have no OpenAI equivalent and are not sent.

Response mapping (OpenAI chunks -> v2 events)
---------------------------------------------
``message-start`` is sent once the server answered 200; ``delta.content`` -> content-start/
content-delta (logprobs -> ``{token_ids, text, logprobs}``: OpenAI sends no token ids, so
``token_ids`` is ``[]`` unless vLLM's ``return_tokens_as_token_ids`` form ``token_id:N`` is
seen); ``delta.tool_calls`` -> tool-call-start/delta/end, a new call at each new ``index`` (no
``tool_plan``: OpenAI has none). Citations are computed on the text against the documents and
the tool results exactly like the embedded engine (``grounding``): inline for FAST, after the
last text delta otherwise. ``finish_reason``: ``length`` -> MAX_TOKENS; ``tool_calls`` (or any
reason once a tool call was streamed) -> TOOL_CALL; ``content_filter`` -> ERROR;
``stop`` -> COMPLETE or STOP_SEQUENCE, see `stop_reason_rule`. Usage comes from the final
chunk (``stream_options.include_usage``); servers that send none (llama-cpp-python) get
``output_tokens`` = the number of streamed chunks (one per token there) and ``input_tokens`` 0.

Errors: an HTTP error -> ``APIError`` (status + the server's message, from OpenAI's
``{"error": {"message"}}``, vLLM's ``{"message"}`` or FastAPI's ``{"detail"}``); no answer ->
``ConnectionError``; an error object inside the stream -> ``message-end`` with ERROR. Retries
(429, 5xx, connect errors) happen only before the first byte of a body. A cancel from any
thread shuts the socket down (``transport.Guard``) and the iteration raises
``Cancelled``. The key never appears in reprs or errors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

from ..errors import APIError, Cancelled, StreamError, ValidationError, register_secret
from ..errors import ConnectionError as NetError
from . import transport
from .base import Cancel

__all__ = [
    "OpenAIBackend",
    "to_openai_request",
    "ChunkTranslator",
    "stop_reason_rule",
    "DEFAULT_BASE_URL",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"  # vLLM's default `vllm serve` address
_TOKEN_ID = re.compile(r"token_id:(\d+)\Z")
# A reply "ends naturally" when its last visible character closes a sentence or a structure.
_NATURAL_END = set(".!?…。！？)]}\"'`*>|")


# -- request translation (pure) -------------------------------------------------------------------
def _text_of(content: Any) -> str:
    from ..protocol.request import message_text

    return message_text({"content": content})


def _user_content(content: Any) -> Any:
    """Plain text, or OpenAI content parts when images are present."""
    if isinstance(content, str) or content is None:
        return content or ""
    if not any(isinstance(b, dict) and b.get("type") == "image_url" for b in content):
        return _text_of(content)
    parts: list[dict[str, Any]] = []
    for b in content:
        if b.get("type") == "image_url":
            parts.append({"type": "image_url", "image_url": dict(b.get("image_url") or {})})
        elif b.get("type", "text") == "text":
            parts.append({"type": "text", "text": str(b.get("text") or "")})
    return parts


def _tool_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    pieces = []
    for b in content or ():
        if not isinstance(b, dict):
            continue
        if "document" in b:
            data = (b.get("document") or {}).get("data")
            pieces.append(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))
        elif isinstance(b.get("text"), str):
            pieces.append(b["text"])
    return "\n".join(pieces)


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    from .prompting import build_system_prompt

    out: list[dict[str, Any]] = []
    # Tools travel natively, so the system text leaves the engine's tool section out.
    system = build_system_prompt(request, include_tools=False)
    if system:
        out.append({"role": "system", "content": system})
    for m in request.get("messages") or ():
        role = m.get("role")
        if role == "system":
            continue  # merged into the one system message above
        if role == "user":
            out.append({"role": "user", "content": _user_content(m.get("content"))})
        elif role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": _text_of(m.get("content"))}
            calls = m.get("tool_calls") or []
            if calls:
                msg["tool_calls"] = [
                    {
                        "id": c.get("id"),
                        "type": "function",
                        "function": {
                            "name": (c.get("function") or {}).get("name", ""),
                            "arguments": (c.get("function") or {}).get("arguments") or "{}",
                        },
                    }
                    for c in calls
                ]
                if not msg["content"]:
                    msg["content"] = None  # OpenAI's shape for a pure tool-call turn
            out.append(msg)
        elif role == "tool":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": m.get("tool_call_id"),
                    "content": _tool_content(m.get("content")),
                }
            )
    return out


def to_openai_request(
    request: dict[str, Any],
    model: str,
    *,
    send_top_k: bool = True,
    response_format_style: str = "openai",
) -> dict[str, Any]:
    """The OpenAI chat-completions body for a validated v2 request (see the module docstring)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": _messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if "temperature" in request:
        body["temperature"] = request["temperature"]
    if "p" in request:
        body["top_p"] = request["p"]
    if "k" in request and send_top_k:
        body["top_k"] = (
            request["k"] if request["k"] > 0 else -1
        )  # -1: "disabled" for vLLM/llama.cpp
    for name in ("frequency_penalty", "presence_penalty", "seed", "max_tokens"):
        if request.get(name) is not None:
            body[name] = request[name]  # penalties: identity, see the module docstring
    if request.get("stop_sequences"):
        body["stop"] = list(request["stop_sequences"])
    if request.get("logprobs"):
        body["logprobs"] = True
        body["top_logprobs"] = 1
    tools = request.get("tools") or []
    if tools:
        strict = bool(request.get("strict_tools"))
        body["tools"] = []
        for t in tools:
            fn = dict(t.get("function") or {})
            out_fn: dict[str, Any] = {"name": fn.get("name", "")}
            if fn.get("description"):
                out_fn["description"] = fn["description"]
            out_fn["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
            if strict:
                out_fn["strict"] = True
            body["tools"].append({"type": "function", "function": out_fn})
    choice = request.get("tool_choice")
    if choice == "NONE":
        body["tool_choice"] = "none"
    elif choice == "REQUIRED":
        if len(tools) == 1:
            name = (tools[0].get("function") or {}).get("name", "")
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        else:
            body["tool_choice"] = "required"
    rf = request.get("response_format") or {}
    if rf.get("type") == "json_object":
        schema = rf.get("json_schema")
        if not schema:
            body["response_format"] = {"type": "json_object"}
        elif response_format_style == "llama.cpp":
            body["response_format"] = {"type": "json_object", "schema": schema}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            }
    return body


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
        from ..protocol.events import StreamBuilder

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
        self._error: tuple[str, str] | None = None
        self.ended = False
        mode = str((request.get("citation_options") or {}).get("mode") or "ACCURATE").upper()
        self._sources = self._citation_sources() if mode not in ("OFF", "DISABLED") else []
        self._fast = mode == "FAST"
        self._tracker: Any = None
        if self._sources and self._fast:
            from .grounding import CitationTracker

            self._tracker = CitationTracker(self._sources)

    def _citation_sources(self) -> list[dict[str, Any]]:
        from ..protocol.request import normalize_documents
        from .grounding import tool_sources

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
            self._error = (msg, kind)
            return out
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is never requested; be safe
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                out += self._text(piece, _logprob_item(choice.get("logprobs")))
            for tc in delta.get("tool_calls") or ():
                out += self._tool_call(tc)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.last_choice = choice
        return out

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
        from ..protocol.events import usage_dict

        b = self.builder
        self.ended = True
        if self._error is not None:
            msg, kind = self._error
            return b.end("ERROR", error=msg, error_type=kind)
        out: list[dict[str, Any]] = []
        if self._call_key is not None:
            out.append(b.tool_call_end())
            self._call_key = None
        if self._sources and self.text:
            if self._tracker is not None:
                cits = self._tracker.finish()
            else:
                from .grounding import compute_citations

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


# -- HTTP ----------------------------------------------------------------------------------------
def _openai_error(status: int, raw: bytes, headers: Any) -> APIError:
    """OpenAI ``{"error": {"message"}}``, vLLM ``{"message"}``, FastAPI ``{"detail"}`` -> APIError."""
    text = raw.decode("utf-8", "replace")
    message = text.strip()
    body: Any = text
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        body = parsed
        err = parsed.get("error")
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
        elif isinstance(err, str) and err:
            message = err
        elif parsed.get("message"):
            message = str(parsed["message"])
        elif parsed.get("detail") is not None:
            detail = parsed["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    if len(message) > 2000:
        message = message[:2000] + "..."
    return APIError(message or "(empty body)", status_code=status, body=body, headers=dict(headers))


class OpenAIBackend:
    """A `Backend` for any OpenAI-compatible chat-completions server.

    ``base_url``: the server root (``http://host:8000``) or its ``/v1`` URL; default
    ``NBCHAT_OPENAI_BASE_URL``, ``OPENAI_BASE_URL``, else ``http://127.0.0.1:8000``.
    ``api_key``: default ``NBCHAT_OPENAI_API_KEY`` / ``OPENAI_API_KEY`` (optional: vLLM and
    llama.cpp run without one). ``model``: used when the request names none; default
    ``NBCHAT_OPENAI_MODEL``, else the first id of ``GET /v1/models``. ``timeout``: seconds or
    ``(connect, read)``. ``response_format_style``: ``"auto"`` | ``"openai"`` | ``"llama.cpp"``.

    Parameter support differs per server: ``k`` (``top_k``) is ignored by Ollama's OpenAI
    endpoint and not sent to api.openai.com; see the module docstring for every mapping.
    """

    name = "openai"
    backoff = 0.5
    max_backoff = 8.0
    max_retry_wait = 60.0

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float | tuple[float, float] | Any = None,
        max_retries: int = 2,
        response_format_style: str = "auto",
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("NBCHAT_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        register_secret(api_key)
        self._key = transport.Secret(api_key)
        base = (
            base_url
            or os.environ.get("NBCHAT_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or DEFAULT_BASE_URL
        ).rstrip("/")
        # Accept both ".../v1" (the OpenAI SDK convention) and the bare server root.
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.model = model or os.environ.get("NBCHAT_OPENAI_MODEL") or None
        self.timeout = transport.make_timeout(timeout)
        self.max_retries = max(0, int(max_retries))
        if response_format_style not in ("auto", "openai", "llama.cpp"):
            raise ValidationError(
                "response_format_style", response_format_style, "auto, openai, llama.cpp"
            )
        self.response_format_style = response_format_style
        self._http: Any = None
        self._served: list[str] | None = None

    def __repr__(self) -> str:
        key = "set" if self._key.get() else "none"
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    # -- plumbing -------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._http is None:
            import httpx

            http = httpx.Client(timeout=self.timeout, follow_redirects=False)
            # lets a cancel shut the socket down mid-connect
            transport.install_guarded_backend(http)
            self._http = http
        return self._http

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = self._key.get()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @property
    def _send_top_k(self) -> bool:
        return "api.openai.com" not in self.base_url  # the only server known to reject it

    # -- Backend protocol -----------------------------------------------------------------------
    def models(self) -> list[str]:
        """Model ids from ``GET /v1/models``; raises APIError / ConnectionError on failure."""
        import httpx

        try:
            resp = self._client().get(
                self.base_url + "/v1/models", headers=self._headers(), timeout=httpx.Timeout(10.0)
            )
        except httpx.TransportError as exc:
            raise NetError(f"cannot reach {self.base_url}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise _openai_error(resp.status_code, resp.content, resp.headers)
        try:
            items = resp.json().get("data") or []
        except ValueError:
            raise APIError("invalid JSON from /v1/models", status_code=resp.status_code) from None
        return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _model_for(self, request: dict[str, Any]) -> str:
        model = request.get("model") or self.model
        if model:
            return model
        if self._served is None:
            self._served = self.models()
        if not self._served:
            raise ValidationError("model", "", "a model name (the server lists none)")
        return self._served[0]

    def stream(
        self, request: dict[str, Any], cancel: Cancel | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield the v2 events for a validated v2 request (Backend protocol)."""
        return self._events(request, cancel if cancel is not None else Cancel())

    def _events(self, request: dict[str, Any], cancel: Cancel) -> Iterator[dict[str, Any]]:
        import httpx

        from ..protocol.sse import SSEDecoder

        guard = transport.Guard()
        unregister = cancel.on_cancel(guard.shutdown)
        resp = None
        try:
            resp = self._open(request, guard, cancel)
            ctype = resp.headers.get("content-type", "")
            if "event-stream" not in ctype:
                raw = transport.read_body(resp, guard, 2000, decoded=False)
                raise StreamError(f"expected text/event-stream, got {ctype!r}", line=raw[:2000])
            tr = ChunkTranslator(request)
            yield tr.start()
            decoder = SSEDecoder()
            try:
                for raw_chunk in resp.iter_raw():
                    for chunk in decoder.feed(raw_chunk):
                        yield from tr.feed(chunk)
                    if decoder.done:
                        break
                if not decoder.done:
                    for chunk in decoder.close():
                        yield from tr.feed(chunk)
            except httpx.TransportError as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                raise NetError(
                    f"connection dropped mid-stream: {transport.describe(exc)}"
                ) from None
            if guard.cancelled:
                raise Cancelled(cancel.reason or "cancelled")
            if not decoder.done and tr.finish_reason is None and tr._error is None:
                raise NetError("stream ended before the server sent a finish_reason")
            yield from tr.finish()
        finally:
            guard.finish()
            unregister()
            if resp is not None:
                resp.close()

    def _open(self, request: dict[str, Any], guard: Any, cancel: Cancel) -> Any:
        """POST with retries; returns a 2xx streaming response (headers read, body not)."""
        model = self._model_for(request)
        style = "llama.cpp" if self.response_format_style == "llama.cpp" else "openai"
        wants_schema = bool((request.get("response_format") or {}).get("json_schema"))

        def payload() -> bytes:
            body = to_openai_request(
                request, model, send_top_k=self._send_top_k, response_format_style=style
            )
            return json.dumps(body, ensure_ascii=False).encode("utf-8")

        def resend(status: int, raw: bytes) -> bool:
            nonlocal style
            if (
                status in (400, 422, 500)
                and wants_schema
                and style == "openai"
                and self.response_format_style == "auto"
                and b"response_format" in raw
            ):
                # llama-cpp-python has no "json_schema" type (it answers 500 with a
                # validation error naming response_format); it takes json_object + schema.
                style = "llama.cpp"
                self.response_format_style = "llama.cpp"
                return True
            return False

        return transport.open_with_retries(
            self,
            self.base_url + "/v1/chat/completions",
            self._headers(),
            payload,
            guard,
            cancel,
            _openai_error,
            decoded=False,
            resend=resend,
        )
