"""Shared fixtures for the TRL adapter tests: offline, one CPU thread, tiny model (see tinyrl.py)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


import pytest


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """A live sapo-monitor service (uvicorn subprocess, temporary SQLite) shared by the TRL tests."""
    from tests.trl.capture import LiveService

    svc = LiveService(tmp_path_factory.mktemp("service"))
    yield svc
    svc.stop()


def pytest_collection_modifyitems(items):
    # TRL 1.16 itself calls a transformers method that transformers 5 deprecated; not ours to fix.
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings(
                "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"))
