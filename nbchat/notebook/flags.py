"""The ``%%chat`` flags: ONE table mapping each flag to its v2 request field.

The table drives the argparse parser (and so the ``%%chat?`` help), the panel's controls
(sliders, integer boxes, the safety_mode dropdown) and error messages that name the flag a user
would change. Ranges, defaults and allowed values come from `nbchat.protocol.request`; nothing
here re-declares them.

Import cost: IPython's argument decorators and the stdlib only (`%load_ext` stays cheap).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from ..protocol.message_rules import IMAGE_DETAILS
from ..protocol.request import CITATION_MODES, DEFAULTS, RANGES, SAFETY_MODES, TOOL_CHOICES
from .values import documents, lookup, schema

__all__ = [
    "Flag",
    "FLAGS",
    "FIELD_FLAGS",
    "PANEL_FIELDS",
    "add_arguments",
    "flag_message",
    "request_fields",
]


@dataclass(frozen=True)
class Flag:
    """One %%chat flag. `field` is the v2 request field it sets ("" for magic-only options);
    `panel` is how the panel shows it ("slider", "int" or "enum"; "" = not on the panel)."""

    names: tuple[str, ...]
    help: str
    field: str = ""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    panel: str = ""
    step: float = 0.0  # slider step

    @property
    def dest(self) -> str:
        return self.names[-1].lstrip("-").replace("-", "_")

    @property
    def label(self) -> str:
        return "/".join(self.names)


def _upper(value: str) -> str:
    return value.upper()


def _range(name: str) -> str:
    lo, hi = RANGES[name]
    return f"{lo}..{hi}" if hi is not None else f">= {lo}"


def _api_default(name: str) -> str:
    return f"Unset: not sent (API default {DEFAULTS[name]})."


FLAGS: tuple[Flag, ...] = (
    Flag(
        ("-m", "--model"),
        "Model name, e.g. command-a-03-2025 or smollm2-135m. Unset: NbChat.model, else the "
        "backend's default.",
        "model",
        {"metavar": "NAME"},
    ),
    Flag(
        ("-t", "--temperature"),
        f"Randomness, {_range('temperature')} (0 = greedy). {_api_default('temperature')}",
        "temperature",
        {"metavar": "TEMP", "type": float},
        "slider",
        0.01,
    ),
    Flag(
        ("-p",),
        f"Top-p nucleus mass, {_range('p')}. {_api_default('p')}",
        "p",
        {"type": float},
        "slider",
        0.01,
    ),
    Flag(
        ("-k",),
        f"Top-k, {_range('k')} (0 = off). {_api_default('k')}",
        "k",
        {"type": int},
        "slider",
        1,
    ),
    Flag(
        ("--frequency-penalty",),
        f"{_range('frequency_penalty')}, penalises tokens by how often they appeared. "
        + _api_default("frequency_penalty"),
        "frequency_penalty",
        {"metavar": "X", "type": float},
        "slider",
        0.01,
    ),
    Flag(
        ("--presence-penalty",),
        f"{_range('presence_penalty')}, penalises tokens that appeared at all. "
        + _api_default("presence_penalty"),
        "presence_penalty",
        {"metavar": "X", "type": float},
        "slider",
        0.01,
    ),
    Flag(
        ("--max-tokens",),
        f"Maximum output tokens per model round, {_range('max_tokens')} (finish reason "
        "MAX_TOKENS). A turn with tool calls has one round per tool step, each with this "
        "budget (the stats show the rounds). Unset: the model's limit.",
        "max_tokens",
        {"metavar": "N", "type": int},
        "int",
    ),
    Flag(
        ("--seed",),
        "0..2**64-1; same seed + parameters -> same output (best effort). Unset: random.",
        "seed",
        {"metavar": "N", "type": int},
        "int",
    ),
    Flag(
        ("--stop",),
        "A stop sequence; repeat for several (at most 5). Unset: none.",
        "stop_sequences",
        {"action": "append", "metavar": "TEXT"},
    ),
    Flag(
        ("--safety-mode",),
        f"{', '.join(SAFETY_MODES)} (any case); not with --documents/--tools. "
        + _api_default("safety_mode"),
        "safety_mode",
        {"type": _upper, "choices": list(SAFETY_MODES)},
        "enum",
    ),
    Flag(
        ("--citations",),
        f"Citation mode with --documents/--tools: {', '.join(CITATION_MODES)}. Unset: API "
        "default (ACCURATE).",
        "citation_options",
        {"type": _upper, "choices": list(CITATION_MODES), "metavar": "MODE"},
    ),
    Flag(
        ("--logprobs",),
        "Return per-token log probabilities. Unset: off.",
        "logprobs",
        {"action": "store_true", "default": None},
    ),
    Flag(
        ("--priority",),
        f"{_range('priority')}, lower runs first when requests queue. Unset: not sent (0).",
        "priority",
        {"metavar": "N", "type": int},
    ),
    Flag(
        ("--tool-choice",),
        f"With --tools: {' or '.join(TOOL_CHOICES)} (REQUIRED: must call a tool; NONE: must "
        "not). Unset: the model decides.",
        "tool_choice",
        {"type": _upper, "choices": list(TOOL_CHOICES)},
    ),
    Flag(
        ("--strict-tools",),
        "Tool call arguments must match the tool schemas. Unset: off.",
        "strict_tools",
        {"action": "store_true", "default": None},
    ),
    Flag(
        ("--json",),
        "Reply with a JSON object (response_format json_object). Unset: text.",
        "response_format",
        {"action": "store_true", "default": None},
    ),
    Flag(
        ("--schema",),
        "A variable holding a JSON schema (dict, JSON string or pydantic model); implies "
        "--json. Unset: any JSON object.",
        "response_format",
        {"metavar": "VAR"},
    ),
    Flag(
        ("--documents",),
        "A variable holding documents for grounded replies: a list of str/dicts, or a pandas "
        "DataFrame (one document per row). Unset: none.",
        "documents",
        {"metavar": "VAR"},
    ),
    Flag(
        ("--tools",),
        "A variable holding a Python function or a list of them; each becomes a tool (schema "
        "from signature, hints and docstring). Unset: none.",
        "tools",
        {"metavar": "VAR"},
    ),
    Flag(
        ("--image",),
        "An image to send with the prompt, as a variable or expression: a matplotlib Figure or "
        "Axes, a PIL image, a numpy array, IPython.display.Image, PNG/JPEG bytes or a file path; "
        "an http(s) URL is taken as it is (passed on, never fetched here). Repeat for several (Cohere: at most "
        "20 images, 20 MB per request). Needs a vision model. Unset: none.",
        "images",
        {"action": "append", "metavar": "EXPR"},
    ),
    Flag(
        ("--image-detail",),
        f"How closely the model looks at the --image images: {', '.join(IMAGE_DETAILS)}. "
        "Unset: not sent (API default auto).",
        "image_detail",
        {"type": str.lower, "choices": list(IMAGE_DETAILS)},
    ),
    Flag(
        ("--thinking",),
        "on or off: a reasoning model thinks before it answers (thinking type enabled / "
        "disabled); the thinking streams into the collapsed Thinking section. Unset: the "
        "model's default (reasoning models think).",
        "thinking",
        {"type": str.lower, "choices": ["on", "off"]},
    ),
    Flag(
        ("--thinking-budget",),
        "At most N thinking tokens (>= 1); implies --thinking on. Unset: the model's default.",
        "thinking",
        {"metavar": "N", "type": int},
    ),
    Flag(
        ("--system",),
        "Set the conversation's system prompt (kept for later turns). Unset: keep the current one.",
        "messages",
        {"metavar": "TEXT"},
    ),
    Flag(
        ("-n", "--name"),
        "The Conversation variable to use (created if missing). Unset: NbChat.conversation "
        "('chat').",
        kwargs={"metavar": "VAR"},
    ),
    Flag(
        ("--new",),
        "Start a fresh Conversation in that variable (the old one is dropped).",
        kwargs={"action": "store_true"},
    ),
    Flag(
        ("--wait",),
        "Block until the reply is complete, even with a live front end.",
        kwargs={"action": "store_true"},
    ),
    Flag(
        ("--history",),
        "Send at most the last N turns of the conversation (it keeps them all). Unset: "
        "NbChat.history_window (None: every turn that fits the model's context).",
        kwargs={"metavar": "N", "type": int},
    ),
    Flag(
        ("--dry-run",),
        "Show the exact validated request as JSON; send nothing, change nothing.",
        kwargs={"action": "store_true"},
    ),
    Flag(
        ("--backend",),
        "A registered backend (built in: auto, cohere, v2, local, openai; plugins through the "
        "nbchat.backends entry points; %%chat config lists them). Unset: NbChat.backend (auto: "
        "Cohere when a key is set, else local).",
        kwargs={"type": str.lower, "metavar": "NAME"},
    ),
    Flag(
        ("--context",),
        "A variable (or expression) whose compact description is added to the prompt: a "
        "DataFrame/Series as shape, dtypes, head and describe(), an array as shape, dtype, "
        "first rows and stats, anything else as its repr; at most 4000 characters each, with "
        "a note of what was cut. Repeat for several. Unset: none.",
        kwargs={"action": "append", "metavar": "VAR"},
    ),
    Flag(
        ("--code",),
        "When the reply is complete, put its first code block into a new cell below (not "
        "run). Live views do it through the nbchat JupyterLab/Notebook extension; headless "
        "runs through IPython's next-input. Unset: off.",
        kwargs={"action": "store_true"},
    ),
    Flag(
        ("--compare",),
        "FIELD=V1,V2,...: run the prompt once per value, at the same time, side by side; "
        "FIELD is a request parameter (temperature, p, k, max_tokens, seed, ...), model or "
        "backend. Repeat to form a grid (the product; at most 8 variants). Unset: one reply.",
        kwargs={"action": "append", "metavar": "FIELD=V1,V2"},
    ),
    Flag(
        ("--keep",),
        "With --compare: the variant (1-based) that becomes the turn's reply; the others stay "
        "in turn.alternatives. Unset: 1 (live views have a Keep this button per column).",
        kwargs={"type": int, "metavar": "N"},
    ),
    Flag(
        ("--no-interpolate",),
        "Send @{...} literally. Unset: NbChat.interpolate (on).",
        kwargs={"action": "store_true"},
    ),
)

# The flag to name in an error about each request field ("the prompt" for messages).
FIELD_FLAGS: dict[str, str] = {}
for _f in FLAGS:
    if _f.field and _f.field not in FIELD_FLAGS:
        FIELD_FLAGS[_f.field] = _f.label
FIELD_FLAGS["response_format"] = "--json/--schema"
FIELD_FLAGS["messages"] = "the prompt / --system"
del _f

# Fields whose flag value is not the field value itself (built below or by the caller).
_SHAPED = (
    "model",
    "citation_options",
    "response_format",
    "documents",
    "tools",
    "messages",
    "images",
    "thinking",
)

# The request fields the panel shows, with their flag (ranges: RANGES; defaults: DEFAULTS).
PANEL_FIELDS: dict[str, Flag] = {f.field: f for f in FLAGS if f.panel}


def add_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a magic with one ``@argument`` per flag, in table order."""
    for f in reversed(FLAGS):
        func = argument(*f.names, help=f.help, **f.kwargs)(func)
    return func


def flag_message(exc: Any) -> str:
    """A ValidationError rewritten to name the flag (or setting) a user would change."""
    path = str(getattr(exc, "field", "") or "")
    top = re.split(r"[.\[]", path, maxsplit=1)[0]
    where = FIELD_FLAGS.get(top) or top or "request"
    return f"{where}: {exc.message}"


# -- parsed flags -> v2 request fields ---------------------------------------------------------------
def request_fields(args: Any, ns: dict[str, Any]) -> dict[str, Any]:
    """The v2 fields the flags set (unset flags are absent). VAR flags are looked up in `ns`;
    --tools, --system and -m are left to the caller (functions, conversation state, backend)."""
    out: dict[str, Any] = {}
    for f in FLAGS:
        if f.field and f.field not in _SHAPED:
            value = getattr(args, f.dest)
            if value is not None:
                out[f.field] = value
    if args.citations:
        out["citation_options"] = {"mode": args.citations}
    if args.schema:
        found = schema(lookup(ns, args.schema, "--schema"))
        out["response_format"] = {"type": "json_object", "json_schema": found}
    elif args.json:
        out["response_format"] = {"type": "json_object"}
    if args.documents:
        out["documents"] = documents(lookup(ns, args.documents, "--documents"))
    if args.image:
        out["images"] = [
            expr if expr.startswith(("http://", "https://")) else lookup(ns, expr, "--image")
            for expr in args.image
        ]
    if args.thinking is not None or args.thinking_budget is not None:
        out["thinking"] = _thinking(args.thinking, args.thinking_budget)
    return out


def _thinking(mode: str | None, budget: int | None) -> dict[str, Any]:
    """--thinking on|off and --thinking-budget N -> the v2 ``thinking`` object."""
    if mode == "off" and budget is not None:
        raise UsageError("--thinking-budget: thinking is off (--thinking off); drop one of them")
    thinking: dict[str, Any] = {"type": "disabled" if mode == "off" else "enabled"}
    if budget is not None:
        thinking["token_budget"] = budget
    return thinking
