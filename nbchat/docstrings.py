"""Parameter docs from a docstring: Google ``Args:``, NumPy ``Parameters`` or Sphinx ``:param``.

`parse_docstring(doc)` -> (description, {parameter: doc}); used by `tools.function_to_tool`.
"""

from __future__ import annotations

import inspect
import re

__all__ = ["parse_docstring"]


_GOOGLE_ARGS = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:\s*$", re.I)
_GOOGLE_SECTION = re.compile(
    r"^\s*(Returns?|Yields?|Raises?|Examples?|Notes?|See Also|Attributes|Warnings?|References)\s*:\s*$",
    re.I,
)
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into (description, {parameter: doc}).

    The description is the text before the first section (all paragraphs, joined); parameter
    docs come from a Google ``Args:`` section, a NumPy ``Parameters`` / ``----------``
    section or Sphinx ``:param name:`` lines. Continuation lines are joined with spaces.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    desc_lines: list[str] = []
    i = 0
    in_desc = True
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _GOOGLE_ARGS.match(line):
            in_desc = False
            i = _parse_google(lines, i + 1, params)
            continue
        if line.strip() and _NUMPY_UNDERLINE.match(nxt):
            in_desc = False
            if line.strip().lower() in (
                "parameters",
                "params",
                "arguments",
                "args",
                "other parameters",
            ):
                i = _parse_numpy(lines, i + 2, params)
            else:
                i = _skip_numpy(lines, i + 2)
            continue
        m = _SPHINX_PARAM.match(line)
        if m:
            in_desc = False
            text = [m.group(2).strip()]
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                text.append(lines[i].strip())
                i += 1
            params[m.group(1)] = " ".join(t for t in text if t)
            continue
        if _GOOGLE_SECTION.match(line) or line.strip().startswith(":"):
            in_desc = False
        if in_desc:
            desc_lines.append(line)
        i += 1
    # Paragraphs of the description joined into one line each, blank line kept between them.
    paragraphs = [" ".join(p.split()) for p in "\n".join(desc_lines).strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p), params


def _parse_google(lines: list[str], i: int, params: dict[str, str]) -> int:
    item = re.compile(r"^(\s+)(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
    base_indent: int | None = None
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:  # next section or text
            return i
        m = item.match(line)
        if m and (base_indent is None or len(m.group(1)) == base_indent):
            base_indent = len(m.group(1))
            current = m.group(2).lstrip("*")
            params[current] = m.group(4).strip()
        elif current is not None:
            params[current] = (params[current] + " " + line.strip()).strip()
        i += 1
    return i


def _parse_numpy(lines: list[str], i: int, params: dict[str, str]) -> int:
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _NUMPY_UNDERLINE.match(nxt):
            return i  # next section header
        if not line.strip():
            i += 1
            continue
        if not line.startswith((" ", "\t")):
            # "name : type" or just "name"; several names "a, b : int" share the doc
            names = [n.strip().lstrip("*") for n in line.split(":", 1)[0].split(",")]
            current = ",".join(names)
            for n in names:
                params[n] = ""
        elif current is not None:
            for n in current.split(","):
                params[n] = (params[n] + " " + line.strip()).strip()
        i += 1
    return i


def _skip_numpy(lines: list[str], i: int) -> int:
    while i < len(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if lines[i].strip() and _NUMPY_UNDERLINE.match(nxt):
            return i
        i += 1
    return i
