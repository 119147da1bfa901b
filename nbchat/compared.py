"""`Comparison`: the variants of one compared turn (``Turn.comparison``), as data.

State only (the running lives in `nbchat.comparison`): ``varied`` (what differs, per
variant), ``turns`` (one Turn per variant), ``kept`` (the variant that is the reply);
`Comparison.keep` switches the reply, `to_dataframe` gives one row per variant. Serialised with
the reply turn: its variants are the reply itself and its ``alternatives``, named by id.
"""

from __future__ import annotations

import copy
from typing import Any

from .protocol.messages import output_tokens

Turn = Any  # nbchat.turn.Turn (not imported: turn.py loads this module)

__all__ = ["Comparison", "MAX_VARIANTS", "variant_label", "mirror"]

MAX_VARIANTS = 8
_MIRRORED = (
    "params",
    "output",
    "response_ids",
    "finish_reason",
    "usage",
    "timings",
    "logprobs",
    "citations",
    "status",
    "error",
    "backend",
    "omitted",
    "exception",
)


def variant_label(varied: dict[str, Any]) -> str:
    """``temperature=0.2 · model=x`` (what a column is labelled with)."""
    return " · ".join(f"{k}={v}" for k, v in varied.items()) or "as set"


class Comparison:
    """The variants of one compared turn: ``varied`` (what differs, per variant), ``turns``
    (one Turn per variant) and ``kept`` (the index of the variant that is the reply)."""

    def __init__(self, varied: list[dict[str, Any]], turns: list[Turn], kept: int = 0) -> None:
        self.varied = [dict(v) for v in varied]
        self.turns = list(turns)
        self.kept = kept
        self.reply: Turn | None = None
        self.host: Any = None  # the conversation (for Keep's history record)

    def __len__(self) -> int:
        return len(self.turns)

    def labels(self) -> list[str]:
        return [variant_label(v) for v in self.varied]

    def keep(self, index: int) -> Turn:
        """Make variant `index` (0-based) the turn's reply; the others become alternatives."""
        if not 0 <= index < len(self.turns):
            from .errors import ValidationError

            raise ValidationError("keep", index + 1, f"1..{len(self.turns)}")
        reply = self.reply
        if reply is None:
            self.kept = index
            return self.turns[index]
        with reply.lock:
            if any(t.status == "running" for t in self.turns):
                self.kept = index  # applied when every variant is done
                return reply
            self.kept = index
            mirror(reply, self.turns[index])
            reply.alternatives = [t for j, t in enumerate(self.turns) if j != index]
        if self.host is not None:
            from .history.recorder import record_finished

            record_finished(self.host, reply)
        return reply

    def to_dataframe(self) -> Any:
        """One row per variant: the varied values, text, tokens, tokens_per_second, ttft (s),
        finish_reason, status and kept."""
        import pandas as pd

        rows = []
        for i, (v, t) in enumerate(zip(self.varied, self.turns, strict=False)):
            rows.append(
                {
                    **v,
                    "text": t.text,
                    "tokens": output_tokens(t.usage),
                    "tokens_per_second": t.timings.get("tokens_per_second"),
                    "ttft": t.timings.get("ttft"),
                    "finish_reason": t.finish_reason,
                    "status": t.status,
                    "kept": i == self.kept,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """What the reply's ``to_dict`` carries: the variants' turns are the reply itself (the
        kept one) and its alternatives, named here by id (nothing stored twice)."""
        return {
            "varied": copy.deepcopy(self.varied),
            "kept": self.kept,
            "turns": [t.id for t in self.turns],
        }

    @classmethod
    def from_reply(cls, reply: Turn, d: dict[str, Any]) -> Comparison:
        by_id = {a.id: a for a in reply.alternatives}
        kept = int(d.get("kept") or 0)
        turns: list[Turn] = []
        for i, tid in enumerate(d.get("turns") or []):
            t = by_id.get(tid)
            if t is None:  # the kept variant: the reply's content under its own id
                t = reply.copy()
                t.alternatives, t.comparison, t.id = [], None, tid
                if i != kept:
                    t.status = "cancelled"
            turns.append(t)
        comp = cls(d.get("varied") or [{} for _ in turns], turns, kept)
        comp.reply = reply
        return comp

    def __repr__(self) -> str:
        return f"Comparison({len(self.turns)} variants, kept={self.kept + 1}: {self.labels()})"


def mirror(reply: Turn, variant: Turn) -> None:
    """Copy a variant's result into the reply turn (its id, input, cell stay)."""
    for name in _MIRRORED:
        value = getattr(variant, name)
        setattr(reply, name, value if name == "exception" else copy.deepcopy(value))
