"""`OpenAIBackend`: the HTTP side of the OpenAI-compatible backend (translation is pure, in
`request` and `chunks`). Shares the HTTP layer of the v2 client (`..http.HTTPBackend`): one
pooled keep-alive client created under a lock, retries before the first byte, cancel from any
thread, redaction."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from ...errors import APIError, Cancelled, StreamError, ValidationError
from ...errors import ConnectionError as NetError
from ..base import Cancel
from ..http import HTTPBackend, body_chunks, drain, read_body, stream_failure
from ..reasoning import openai_thinking_fields
from .chunks import ChunkTranslator
from .request import to_openai_request

DEFAULT_BASE_URL = "http://127.0.0.1:8000"  # vLLM's default `vllm serve` address


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


class OpenAIBackend(HTTPBackend):
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
        base = (
            base_url
            or os.environ.get("NBCHAT_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or DEFAULT_BASE_URL
        ).rstrip("/")
        # Accept both ".../v1" (the OpenAI SDK convention) and the bare server root.
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.model = model or os.environ.get("NBCHAT_OPENAI_MODEL") or None
        self._setup_http(api_key, timeout, max_retries)
        if response_format_style not in ("auto", "openai", "llama.cpp"):
            raise ValidationError(
                "response_format_style", response_format_style, "auto, openai, llama.cpp"
            )
        self.response_format_style = response_format_style
        self._served: list[str] | None = None
        self._count_path: str | None = None  # the tokenize endpoint that answered ("" = none)

    def __repr__(self) -> str:
        key = "set" if self._key.get() else "none"
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    # -- plumbing -------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return self._auth({"Content-Type": "application/json", "Accept": "text/event-stream"})

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

    def _count_prompt(self, request: dict[str, Any]) -> int | None:
        """The prompt's token count from the server, for servers whose stream has no usage.

        ``POST /tokenize`` with the chat messages (vLLM, SGLang: the exact count, chat template
        included), else ``POST /extras/tokenize/count`` with the messages' text (llama-cpp-
        python: the text's tokens, without the template's few role tokens). None if neither.
        """
        import httpx

        body = to_openai_request(request, self._model_for(request), send_top_k=False)
        messages = body.get("messages") or []
        text = "\n".join(
            f"{m.get('role')}\n{m['content'] if isinstance(m.get('content'), str) else ''}"
            for m in messages
        )
        attempts = [
            ("/tokenize", {"model": body.get("model"), "messages": messages}),
            ("/extras/tokenize/count", {"input": text}),
        ]
        if self._count_path == "":  # neither answered before: don't ask on every turn
            return None
        if self._count_path is not None:  # the one that worked before
            attempts = [a for a in attempts if a[0] == self._count_path]
        for path, payload in attempts:
            try:
                resp = self._client().post(
                    self.base_url + path,
                    json=payload,
                    headers=self._auth({"Content-Type": "application/json"}),
                    timeout=httpx.Timeout(10.0),
                )
                count = resp.json().get("count") if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            if isinstance(count, int) and count > 0:
                self._count_path = path
                return count
        if self._count_path is None:
            self._count_path = ""
        return None

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

        from ...protocol.sse import SSEDecoder
        from ..netio import Guard

        guard = Guard()
        unregister = cancel.on_cancel(guard.shutdown)
        resp = None
        chunks: Iterator[bytes] = iter(())
        decoder = SSEDecoder()
        try:
            resp = self._open(request, guard, cancel)
            ctype = resp.headers.get("content-type", "")
            if "event-stream" not in ctype:
                raw = read_body(resp, guard, 2000, decoded=False)
                raise StreamError(f"expected text/event-stream, got {ctype!r}", line=raw[:2000])
            tr = ChunkTranslator(request)
            yield tr.start()
            chunks = body_chunks(resp)
            try:
                for raw_chunk in chunks:
                    for chunk in decoder.feed(raw_chunk):
                        yield from tr.feed(chunk)
                    if decoder.done:
                        break
                if not decoder.done:
                    for chunk in decoder.close():
                        yield from tr.feed(chunk)
            except (httpx.TransportError, OSError) as exc:
                raise stream_failure(exc, guard, cancel, tr.chunks) from None
            if guard.cancelled:
                raise Cancelled(cancel.reason or "cancelled")
            if not decoder.done and tr.finish_reason is None and tr.error is None:
                raise NetError("stream ended before the server sent a finish_reason")
            if not tr.usage and not guard.cancelled:
                # no usage in the stream (llama-cpp-python): count the prompt, never report 0;
                # on the same kept-alive connection, so the stream's body is finished first
                if decoder.done:
                    drain(chunks, resp)
                resp.close()
                resp = None
                n_in = self._count_prompt(request)
                if n_in is not None:
                    tr.usage = {"prompt_tokens": n_in, "completion_tokens": tr.chunks}
            yield from tr.finish()
        finally:
            # [DONE] seen: read the body's end so the connection is reused by the next turn.
            if resp is not None and decoder.done and not guard.cancelled:
                drain(chunks, resp)
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
            body.update(openai_thinking_fields(request.get("thinking"), self.base_url))
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

        return self._send(
            self.base_url + "/v1/chat/completions",
            self._headers(),
            payload,
            guard,
            cancel,
            _openai_error,
            decoded=False,
            resend=resend,
        )
