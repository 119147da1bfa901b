"""The embedded engine's tool policy and grammars, and the guard that keeps its tool-call markup
out of text replies."""

from __future__ import annotations

import json
import re
from typing import Any

from ...protocol.request import message_text
from .. import prompting

MAX_PARALLEL_CALLS = 3

# -- auto tool policy ----------------------------------------------------------------------------
_GENERIC_NAME_WORDS = frozenset(
    "get set list fetch find lookup look query run call do make tool tools function func api "
    "info data current the a an of for to by with from and or".split()
)


def _stem(word: str) -> str:
    word = word.casefold()
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _name_words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {
        _stem(w) for w in re.split(r"[^A-Za-z0-9]+", spaced) if len(w) >= 3
    } - _GENERIC_NAME_WORDS


def auto_tool_pick(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Auto mode: the tools to call (best matches), or [] to answer in text. See `local`."""
    messages = request.get("messages") or []
    tools = request.get("tools") or []
    if not tools or not messages or messages[-1].get("role") != "user":
        return []
    said = {_stem(w) for w in re.findall(r"[A-Za-z0-9]+", message_text(messages[-1]))}
    scored = [
        (len(_name_words((t.get("function") or {}).get("name", "")) & said), t) for t in tools
    ]
    best = max(score for score, _ in scored)
    return [t for score, t in scored if score == best] if best else []


# -- grammars ------------------------------------------------------------------------------------
def json_grammar(schema: dict[str, Any] | None) -> str:
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if not schema:
        return JSON_GBNF
    return json_schema_to_gbnf(json.dumps(schema))


def tool_grammar(tools: list[dict[str, Any]], strict: bool) -> str:
    """GBNF: ``Plan: <line>\\n<tool_call>{"name": N, "arguments": A}</tool_call>`` x 1..3."""
    from llama_cpp.llama_grammar import SchemaConverter

    variants = []
    for tool in tools:
        fn = tool.get("function") or {}
        params = fn.get("parameters") if strict else None
        if not isinstance(params, dict) or not params:
            params = {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn.get("name", "")}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    schema = conv.resolve_refs(schema, "tools")
    conv.visit(schema, "nbc-call")
    more = f'("\\n" nbc-item){{0,{MAX_PARALLEL_CALLS - 1}}}'
    rules = {
        "root": f'"{prompting.PLAN_PREFIX}I will " nbc-plan "\\n" nbc-item {more}',
        "nbc-plan": "[^\\n<]{1,160}",
        "nbc-item": f'"{prompting.TOOL_CALL_OPEN}" nbc-call "{prompting.TOOL_CALL_CLOSE}"',
    }
    return conv.format_grammar() + "\n" + "\n".join(f"{k} ::= {v}" for k, v in rules.items())


# -- markup guard --------------------------------------------------------------------------------
# What a text reply can never contain: the engine's call tags (also without their closing ">").
FORBIDDEN = (prompting.TOOL_CALL_OPEN[:-1], prompting.TOOL_CALL_CLOSE[:-1])


class MarkupGuard:
    """Token bans that make `FORBIDDEN` impossible in generated text.

    Built once per model from the text of every token. Before each sampling step, `bans(text)`
    gives the token ids to exclude given the text generated so far: tokens whose text contains
    a forbidden string, and, when the text ends with the first k characters of one, the tokens
    whose text starts with its remaining characters. So no token sequence can complete it,
    whatever the tokenisation; every other continuation stays possible.
    """

    def __init__(self, pieces: list[str]) -> None:
        import numpy as np

        always = [i for i, p in enumerate(pieces) if any(f in p for f in FORBIDDEN)]
        self.always = np.array(always, dtype=np.int64)
        self.after: list[tuple[str, Any]] = []
        for f in FORBIDDEN:
            for k in range(1, len(f)):
                rest = f[k:]
                ids = [i for i, p in enumerate(pieces) if p.startswith(rest)]
                if ids:
                    self.after.append((f[:k], np.array(ids, dtype=np.int64)))

    def bans(self, text: str) -> list[Any]:
        out = [self.always] if len(self.always) else []
        tail = text[-16:]
        out += [ids for prefix, ids in self.after if tail.endswith(prefix)]
        return out
