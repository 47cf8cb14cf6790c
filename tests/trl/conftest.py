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
