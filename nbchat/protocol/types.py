"""Typed shapes of the v2 chat wire format (TypedDicts: documentation for readers and mypy).

They describe what `validate_request` accepts and what backends yield; at runtime they are
plain dicts. ``total=False`` marks optional keys. Names follow Cohere's OpenAPI spec.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "JSON",
    "TextBlock",
    "ThinkingBlock",
    "ImageURL",
    "ImageBlock",
    "Document",
    "DocumentBlock",
    "ContentBlock",
    "ToolCallFunction",
    "ToolCall",
    "Citation",
    "SystemMessage",
    "UserMessage",
    "AssistantMessage",
    "ToolMessage",
    "Message",
    "ToolFunction",
    "ToolDef",
    "CitationOptions",
    "ResponseFormat",
    "Thinking",
    "Request",
    "Tokens",
    "Usage",
    "Event",
    "Response",
    "CellInfo",
]

JSON = Any  # any JSON value (recursive aliases are not worth their cost here)


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class ThinkingBlock(TypedDict):
    type: Literal["thinking"]
    thinking: str


class _ImageURLBase(TypedDict):
    url: str


class ImageURL(_ImageURLBase, total=False):
    detail: Literal["auto", "low", "high"]


class ImageBlock(TypedDict):
    type: Literal["image_url"]
    image_url: ImageURL


class _DocumentBase(TypedDict):
    data: dict[str, JSON] | str


class Document(_DocumentBase, total=False):
    id: str


class DocumentBlock(TypedDict):
    type: Literal["document"]
    document: Document


ContentBlock = TextBlock | ThinkingBlock | ImageBlock | DocumentBlock
Content = str | list[ContentBlock]


class ToolCallFunction(TypedDict, total=False):
    name: str
    arguments: str  # JSON-encoded


class _ToolCallBase(TypedDict):
    id: str
    function: ToolCallFunction


class ToolCall(_ToolCallBase, total=False):
    type: Literal["function"]


class Citation(TypedDict, total=False):
    start: int
    end: int
    text: str
    sources: list[dict[str, JSON]]
    type: str
    content_index: int


class SystemMessage(TypedDict):
    role: Literal["system"]
    content: Content


class UserMessage(TypedDict):
    role: Literal["user"]
    content: Content


class _AssistantBase(TypedDict):
    role: Literal["assistant"]


class AssistantMessage(_AssistantBase, total=False):
    content: Content
    tool_plan: str
    tool_calls: list[ToolCall]
    citations: list[Citation]


class ToolMessage(TypedDict):
    role: Literal["tool"]
    tool_call_id: str
    content: Content


Message = SystemMessage | UserMessage | AssistantMessage | ToolMessage


class _ToolFunctionBase(TypedDict):
    name: str
    parameters: dict[str, JSON]  # a JSON Schema object


class ToolFunction(_ToolFunctionBase, total=False):
    description: str


class ToolDef(TypedDict):
    type: Literal["function"]
    function: ToolFunction


class CitationOptions(TypedDict, total=False):
    mode: str


class ResponseFormat(TypedDict, total=False):
    type: Literal["text", "json_object"]
    json_schema: dict[str, JSON]


class Thinking(TypedDict, total=False):
    type: Literal["enabled", "disabled"]
    token_budget: int


class _RequestBase(TypedDict):
    model: str
    messages: list[Message]


class Request(_RequestBase, total=False):
    """The POST /v2/chat body (see `protocol.request.validate_request`)."""

    stream: bool
    tools: list[ToolDef]
    strict_tools: bool
    documents: list[str | Document]
    citation_options: CitationOptions
    response_format: ResponseFormat
    safety_mode: Literal["CONTEXTUAL", "STRICT", "OFF"]
    max_tokens: int
    stop_sequences: list[str]
    temperature: float
    seed: int
    frequency_penalty: float
    presence_penalty: float
    k: int
    p: float
    logprobs: bool
    tool_choice: Literal["REQUIRED", "NONE"]
    thinking: Thinking
    priority: int


class Tokens(TypedDict, total=False):
    input_tokens: float
    output_tokens: float


class Usage(TypedDict, total=False):
    billed_units: Tokens
    tokens: Tokens
    cached_tokens: float


class _EventBase(TypedDict):
    type: str  # message-start, content-start, content-delta, ..., message-end


class Event(_EventBase, total=False):
    """One stream event, as on the wire (``data:`` of an SSE frame)."""

    id: str
    index: int
    delta: dict[str, JSON]
    logprobs: dict[str, JSON]


class _ResponseBase(TypedDict):
    id: str | None
    finish_reason: str | None
    message: AssistantMessage


class Response(_ResponseBase, total=False):
    """The non-stream response (what `Accumulator.response` folds a stream into); ``error``
    and ``error_type`` only for a stream that ended with ``finish_reason: ERROR``."""

    usage: Usage
    logprobs: list[dict[str, JSON]]
    error: str
    error_type: str


class CellInfo(TypedDict, total=False):
    """Where a notebook turn came from: ``cell_id`` is its stable identity."""

    cell_id: str | None
    execution_count: int | None
