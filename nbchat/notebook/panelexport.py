"""The panel's **Export**: the conversation as a DataFrame (kept in ``panel.dataframe``) and a
CSV file (JSON-valued columns, integer counts), with a download link in the status line."""

from __future__ import annotations

import base64
import datetime
import html
import os
import pathlib
from typing import Any

__all__ = ["export"]


def export(panel: Any, path: str | None = None) -> Any:
    """Write `panel.conversation.to_dataframe()` to `path` (default: a timestamped name in the
    working directory); returns the DataFrame. A file up to 5 MB also gets a data: link."""

    df = panel.conversation.to_dataframe()
    panel.dataframe = df
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = f"nbchat-export-{stamp}.csv"
    df.to_csv(path, index=False)
    panel.export_path = full = os.path.abspath(path)
    data = pathlib.Path(full).read_bytes()
    name = os.path.basename(full)
    link = ""
    if len(data) <= 5_000_000:  # a data: link downloads it from the browser, no server path
        b64 = base64.b64encode(data).decode()
        link = (
            f' <a href="data:text/csv;base64,{b64}" download="{html.escape(name)}" '
            f'class="nbchat-export-link">download {html.escape(name)}</a>'
        )
    panel.status.value = (
        f"<small>Exported {len(df)} rows to {html.escape(full)}{link} "
        "(also in <code>panel.dataframe</code>)</small>"
    )
    return df
