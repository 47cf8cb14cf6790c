from __future__ import annotations

from pathlib import Path

import pytest
from sapo_monitor.client.settings import ClientSettings

from tests.client.receiver import Receiver


@pytest.fixture
def receiver():
    rx = Receiver().start()
    yield rx
    rx.stop()


@pytest.fixture
def fast_settings(tmp_path: Path) -> ClientSettings:
    """Short batching and backoff so delivery tests finish in well under a second each."""
    return ClientSettings(spool_dir=tmp_path / "spool", flush_interval=0.05, max_backoff=0.2, timeout=2.0,
                          close_timeout=10.0)
