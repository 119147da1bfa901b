"""The notebooks in notebooks/ run headless with nbclient (a real kernel), as nbconvert --execute
and papermill do: every %%chat cell must leave a complete static output, and a failed call must
fail the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook
from v2server import V2Server, error_reply, events_body, sse, text_events

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
STATIC = {"text/plain", "text/markdown", "text/html"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
OK_FINISH = {"COMPLETE", "MAX_TOKENS", "STOP_SEQUENCE", "TOOL_CALL"}


def execute(nb: Any, cwd: Path, timeout: int = 900) -> Any:
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def cell(nb: Any, needle: str) -> Any:
    [found] = [c for c in code_cells(nb) if needle in c.source]
    return found


def stdout(c: Any) -> str:
    return "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")


def check_chat_outputs(nb: Any) -> int:
    """Every output is error-free; each sending %%chat cell has one static bundle."""
    n = 0
    for c in code_cells(nb):
        assert not [o for o in c.outputs if o.output_type == "error"], c.source
        if not c.source.startswith("%%chat"):
            continue
        displays = [o for o in c.outputs if o.output_type == "display_data"]
        assert len(displays) == 1, c.source
        data = displays[0]["data"]
        if "--dry-run" in c.source.splitlines()[0]:
            request = data["application/json"]
            assert request["messages"][-1]["role"] == "user" and request["stream"] is True
            continue
        assert STATIC <= set(data), (c.source, sorted(data))
        assert data["text/plain"].startswith("User: ") and "Assistant:" in data["text/plain"]
        assert "<script" not in data["text/html"]
        n += 1
    return n


@pytest.mark.parametrize("name", ["quickstart", "tour"])
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for c in code_cells(nb):
        assert c.outputs == [] and c.execution_count is None, c.source
    assert "widgets" not in nb.metadata


@pytest.mark.engine
@pytest.mark.timeout(1200)  # the embedded model on 2 shared cores: minutes, not seconds
def test_quickstart_runs_headless(tmp_path, monkeypatch):
    monkeypatch.delenv("CO_API_KEY", raising=False)  # auto -> the embedded model
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    nb = execute(nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4), tmp_path)
    assert check_chat_outputs(nb) == 3
    assert "smollm2-135m" in cell(nb, "explain @{topic}").outputs[0]["data"]["text/plain"]
    sent = cell(nb, "explain @{topic}").outputs[0]["data"]["text/plain"]
    assert "explain photosynthesis" in sent and '{"leaf": "green"}' in sent  # interpolation
    last = code_cells(nb)[-1].outputs[0]["data"]["text/plain"].strip("'")
    assert last in OK_FINISH


@pytest.mark.engine
@pytest.mark.timeout(2400)
def test_tour_runs_headless_and_shows_every_feature(tmp_path, monkeypatch):
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    nb = execute(nbformat.read(NOTEBOOKS / "tour.ipynb", as_version=4), tmp_path)
    assert check_chat_outputs(nb) >= 12

    summary = json.loads(stdout(cell(nb, "summary = {")).strip())
    for conv, reasons in summary.items():
        assert reasons and set(reasons) <= OK_FINISH, (conv, reasons)
    # limits: the 5-token reply is cut
    assert cell(nb, "--max-tokens 5").outputs and "MAX_TOKENS" in json.dumps(
        code_cells(nb)[code_cells(nb).index(cell(nb, "--max-tokens 5")) + 1].outputs
    )
    # interpolation: @{city} replaced, braces and the @@{ escape kept
    prompt = stdout(cell(nb, "print(chat.turns[-1].prompt)"))
    assert "Lisbon" in prompt and "@{city}" in prompt and "{settings['retries']}" in prompt
    literal = cell(nb, "--no-interpolate --dry-run").outputs[0]["data"]["application/json"]
    assert literal["messages"][-1]["content"] == "@{city} is sent literally here."
    # JSON with a schema parses and validates
    person = cell(nb, "person = json.loads").outputs[0]["data"]["text/plain"]
    assert "'name'" in person and "'age'" in person
    # logprobs came back
    assert int(stdout(cell(nb, "lp = chat.turns[-1].logprobs")).split()[0]) > 0
    # tools ran in the kernel and the turn continued to an answer
    assert "tool ran with: ['Paris']" in stdout(cell(nb, 'print("tool ran with:"'))
    assert "tool ->" in stdout(cell(nb, 'print("tool ran with:"'))
    # bad flag values are UsageErrors naming the flag and the range
    err = stdout(cell(nb, 'run_cell_magic("chat", "-t 3"'))
    assert err.startswith("UsageError") and "--temperature" in err and "3" in err
    # exports
    assert (tmp_path / "tour_chat.json").exists() and (tmp_path / "tour_chat.csv").exists()
    assert "smollm2-135m" in stdout(cell(nb, "%chat models"))
    # the panel is a widget whose state nbclient saved
    panel = cell(nb, "%chat panel")
    [view] = [
        o["data"][WIDGET_VIEW]["model_id"]
        for o in panel.outputs
        if WIDGET_VIEW in o.get("data", {})
    ]
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert view in state


def test_failed_call_fails_the_headless_run(tmp_path, monkeypatch):
    monkeypatch.delenv("CO_API_KEY", raising=False)
    with V2Server() as srv:
        srv.push(
            sse(events_body(text_events(["Fine", "."]))),
            error_reply(400, "invalid request: model not found"),
        )
        nb = new_notebook(
            cells=[
                new_code_cell(
                    "%load_ext nbchat\n%config NbChat.backend = 'v2'\n"
                    f"%config NbChat.base_url = '{srv.url}'\n%config NbChat.api_key = 'k-123'\n"
                    "%config NbChat.model = 'command-a-03-2025'"  # no model-discovery GET
                ),
                new_code_cell("%%chat -t 0.1\nfirst"),
                new_code_cell("%%chat\nsecond"),
                new_code_cell("print('never reached')"),
            ]
        )
        with pytest.raises(CellExecutionError, match="model not found"):
            execute(nb, tmp_path, timeout=120)
    first, second, last = nb.cells[1], nb.cells[2], nb.cells[3]
    [bundle] = [o for o in first.outputs if o.output_type == "display_data"]
    assert STATIC <= set(bundle["data"]) and "Fine." in bundle["data"]["text/markdown"]
    assert WIDGET_VIEW not in bundle["data"]  # nbclient is not a live front end
    assert [o.output_type for o in second.outputs][-1] == "error"
    assert any("model not found" in json.dumps(o.get("data", {})) for o in second.outputs)
    assert last.outputs == []
    assert srv.requests[0].json["temperature"] == 0.1
