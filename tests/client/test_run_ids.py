"""``init`` checks the run id with the wire's one rule, the service's (issue 15 item 4): an id the client
took but the service refused sent every batch to ``rejected/`` forever, and ``..`` / ``.`` escaped or
became the spool root."""

from __future__ import annotations

from pathlib import Path

import pytest
from sapo_monitor.client import wire
from sapo_monitor.client.errors import ConfigError
from sapo_monitor.client.monitor import init
from sapo_monitor.client.settings import ClientSettings


@pytest.mark.parametrize("run_id", ["..", ".", "-x", "_x", ".x", "a..b", "x.", "a/b", "a b", "a" * 201])
def test_init_refuses_ids_the_service_refuses(tmp_path: Path, run_id: str) -> None:
    settings = ClientSettings(spool_dir=tmp_path / "spool")
    with pytest.raises(ConfigError) as err:
        init(run_id, settings=settings)
    assert repr(run_id) in str(err.value) and wire.RUN_ID_RULE in str(err.value)
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())
    assert not (tmp_path / "rejected").exists()


@pytest.mark.parametrize("run_id", ["a", "sapo-2026.12.01_x", "A" * 200, "0.1.2"])
def test_init_takes_ids_the_service_takes_and_spools_inside_the_root(tmp_path: Path, run_id: str) -> None:
    monitor = init(run_id, settings=ClientSettings(spool_dir=tmp_path / "spool"))
    try:
        assert monitor.spool_dir.resolve().parent == (tmp_path / "spool").resolve()
    finally:
        monitor.close(timeout=5)


def test_init_refuses_a_config_the_service_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="64-bit"):
        init("cfg", settings=ClientSettings(spool_dir=tmp_path / "spool"), config={"seed": 2**70})
