"""``%%chat --context VAR``: a compact, bounded description of a notebook value.

A pandas DataFrame/Series becomes its shape, dtypes, first rows and ``describe()``; a numpy
array its shape, dtype, first rows and min/max/mean; anything else its ``repr``. Large frames
are summarised from an evenly spaced sample (said so), wide ones show their first columns, and
the whole text is kept under `CAP` characters: each part is cut to what is left of the budget
with a note of what was cut. ``str(df)`` of a big frame is never built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "CAP"]

CAP = 4000  # characters per --context value
SAMPLE = 10_000  # rows describe() reads from a large frame
HEAD = 5  # rows shown
COLUMNS = 20  # columns shown in head/describe
NOTE_ROOM = 300  # characters kept for the note of what was cut


def describe(name: str, value: Any, cap: int = CAP) -> str:
    """The description of `value` (variable `name`), at most `cap` characters."""
    kind = type(value).__module__.split(".")[0]
    if kind == "pandas" and hasattr(value, "dtypes"):
        parts = _pandas(value)
    elif kind == "numpy" and hasattr(value, "shape"):
        parts = _numpy(value)
    else:
        parts = [("repr", repr(value))]
    header = f"Context `{name}` ({type(value).__module__}.{type(value).__name__}):"
    return _fit(header, parts, cap)


def _fit(header: str, parts: list[tuple[str, str]], cap: int) -> str:
    """Join the parts under `cap`; a part that does not fit is cut, with a note saying so."""
    blocks = [f"{title}:\n{text}" for title, text in parts]
    whole = "\n".join([header, *blocks])
    if len(whole) <= cap:
        return whole
    out = [header]
    left = cap - len(header) - NOTE_ROOM
    cut: list[str] = []
    for (title, _), block in zip(parts, blocks, strict=True):
        if len(block) + 1 <= left:
            out.append(block)
            left -= len(block) + 1
        elif left > len(title) + 40:
            out.append(block[: left - 1])
            cut.append(f"{title}: showed {left - 1} of {len(block)} characters")
            left = 0
        else:
            cut.append(f"{title}: {len(block)} characters left out")
    note = f"[cut to stay under {cap} characters: {'; '.join(cut)}]"
    return "\n".join(out) + "\n" + note[: NOTE_ROOM - 1]


def _pandas(df: Any) -> list[tuple[str, str]]:
    series = not hasattr(df, "columns")
    frame = df.to_frame() if series else df
    rows, ncols = frame.shape
    shown = frame.iloc[:, :COLUMNS]
    more = f" (first {COLUMNS} of {ncols} columns)" if ncols > COLUMNS else ""
    dtypes = frame.dtypes
    dtype_lines = [f"{c}: {t}" for c, t in zip(dtypes.index[:50], dtypes.values[:50], strict=False)]
    if ncols > 50:
        dtype_lines.append(f"... and {ncols - 50} more columns")
    parts = [
        ("shape", f"{rows} rows x {ncols} columns" + (" (a Series)" if series else "")),
        ("dtypes", "\n".join(dtype_lines)),
        (f"head({HEAD}){more}", shown.head(HEAD).to_string(max_colwidth=40)),
    ]
    sample = shown
    note = ""
    if rows > SAMPLE:
        step = rows // SAMPLE
        sample = shown.iloc[::step][:SAMPLE]
        note = f" over {len(sample)} evenly spaced rows of {rows}"
    try:
        desc = sample.describe(include="all").to_string(max_colwidth=30)
    except ValueError:  # e.g. no columns
        desc = "(nothing to describe)"
    parts.append((f"describe(){note}{more}", desc))
    return parts


def _numpy(a: Any) -> list[tuple[str, str]]:
    import numpy as np

    parts = [("shape", f"{a.shape}, dtype {a.dtype}")]
    with np.printoptions(threshold=200, edgeitems=3, linewidth=100):
        parts.append((f"first {HEAD} rows" if a.ndim > 1 else "values", str(a[:HEAD])))
    if a.size and np.issubdtype(a.dtype, np.number):
        flat = a.reshape(-1)
        note = ""
        if flat.size > SAMPLE * 10:
            flat = flat[:: flat.size // (SAMPLE * 10)]
            note = f" (over {flat.size} evenly spaced values of {a.size})"
        stats = f"min {flat.min()}, max {flat.max()}, mean {flat.mean():.6g}"
        parts.append(("stats" + note, stats))
    return parts
