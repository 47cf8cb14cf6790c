"""Shared fixtures for the TRL adapter tests: offline, one CPU thread, tiny model (see tinyrl.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

sys.path.insert(0, str(Path(__file__).parent))  # tinyrl is a helper module next to the tests


import pytest


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """A live sapo-monitor service (uvicorn subprocess, temporary SQLite) shared by the TRL tests."""
    from capture import LiveService

    svc = LiveService(tmp_path_factory.mktemp("service"))
    yield svc
    svc.stop()
