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
* ``thinking`` -> ``chat_template_kwargs: {enable_thinking, thinking}`` (true/false; what
  reasoning chat templates read on vLLM, SGLang and llama.cpp's server), not sent to
  api.openai.com; ``token_budget`` and ``priority`` have no OpenAI equivalent and are not
  sent (see `backends.reasoning`).

Response mapping (OpenAI chunks -> v2 events)
---------------------------------------------
``message-start`` is sent once the server answered 200; ``delta.reasoning_content`` /
``delta.reasoning`` (reasoning parsers) -> a thinking block; ``delta.content`` -> content-start/
content-delta (logprobs -> ``{token_ids, text, logprobs}``: OpenAI sends no token ids, so
``token_ids`` is ``[]`` unless vLLM's ``return_tokens_as_token_ids`` form ``token_id:N`` is
seen); ``delta.tool_calls`` -> tool-call-start/delta/end, a new call at each new ``index`` (no
``tool_plan``: OpenAI has none). Citations are computed on the text against the documents and
the tool results exactly like the embedded engine (``grounding``): inline for FAST, after the
last text delta otherwise. ``finish_reason``: ``length`` -> MAX_TOKENS; ``tool_calls`` (or any
reason once a tool call was streamed) -> TOOL_CALL; ``content_filter`` -> ERROR;
``stop`` -> COMPLETE or STOP_SEQUENCE, see `stop_reason_rule`. Usage comes from the final
chunk (``stream_options.include_usage``); servers that send none (llama-cpp-python) get
``output_tokens`` = the number of streamed chunks (one per token there) and ``input_tokens``
counted by the server's tokenize endpoint (`OpenAIBackend._count_prompt`).

Errors: an HTTP error -> ``APIError`` (status + the server's message, from OpenAI's
``{"error": {"message"}}``, vLLM's ``{"message"}`` or FastAPI's ``{"detail"}``); no answer ->
``ConnectionError``; an error object inside the stream -> ``message-end`` with ERROR. Retries
(429, 5xx, connect errors) happen only before the first byte of a body. A cancel from any
thread shuts the socket down and the iteration raises ``Cancelled``. The key never appears in
reprs or errors.

Modules: `request` (v2 request -> OpenAI body, pure), `chunks` (OpenAI chunks -> v2 events,
pure), `backend` (`OpenAIBackend`: HTTP, on the layer shared with the v2 client).
"""

from __future__ import annotations

from .backend import DEFAULT_BASE_URL, OpenAIBackend
from .chunks import ChunkTranslator, stop_reason_rule
from .request import to_openai_request

__all__ = [
    "OpenAIBackend",
    "to_openai_request",
    "ChunkTranslator",
    "stop_reason_rule",
    "DEFAULT_BASE_URL",
]
