"""Background delivery against a real HTTP receiver on 127.0.0.1 (tests/client/receiver.py)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytest
import torch
from sapo_monitor.client import ConfigError, InputError, init
from sapo_monitor.client._spool import Spool
from sapo_monitor.client.upload import upload_spool
from sapo_monitor.client.wire import encode_batch
from typer.testing import CliRunner

from sapo_monitor.cli.main import app
from tests.client.receiver import Receiver


def _steps(mon, steps):
    return [mon.end_step(s, loss=float(s), grad_norm=1.0, lr=1e-3) for s in steps]


def _warnings(caplog, text):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_steps_reach_the_service_once_and_the_run_is_marked_finished(receiver, fast_settings):
    mon = init("d-1", server=receiver.url, algo="sapo", project="p", config={"lr": 1e-3}, tags={"k": 1},
               settings=fast_settings)
    records = _steps(mon, range(50))
    assert records[3].step == 3 and records[3].metrics["loss"] == 3.0
    assert mon.flush(10)
    assert receiver.step_numbers("d-1") == list(range(50))
    assert receiver.runs["d-1"]["project"] == "p" and receiver.runs["d-1"]["algorithm"] == "sapo"
    assert receiver.runs["d-1"]["status"] == "running" and receiver.runs["d-1"]["tags"] == {"k": "1"}
    assert receiver.posts < 50  # batched
    mon.close()
    assert receiver.runs["d-1"]["status"] == "finished"
    assert Spool(mon.spool_dir).pending() == []


def test_end_step_does_not_wait_for_a_dead_service(fast_settings, caplog):
    dead = Receiver().start()
    url = dead.url
    dead.stop()  # nothing listens on this port now
    mon = init("d-2", server=url, settings=fast_settings)
    start = time.perf_counter()
    _steps(mon, range(30))
    assert time.perf_counter() - start < 0.5
    time.sleep(0.5)
    mon.close(timeout=0.5)
    assert len(_warnings(caplog, "cannot deliver run d-2")) == 1  # once, with the reason
    assert "ConnectError" in _warnings(caplog, "cannot deliver run d-2")[0].getMessage()
    stored = Spool(mon.spool_dir)
    assert stored.pending() and stored.read_run()["status_pending"] is True


def test_transient_503s_are_retried(receiver, fast_settings):
    receiver.fail_count = 3
    mon = init("d-3", server=receiver.url, settings=fast_settings)
    _steps(mon, range(10))
    assert mon.flush(10)
    assert receiver.step_numbers("d-3") == list(range(10))
    mon.close()


def test_bad_token_keeps_batches_and_upload_sends_them_later(fast_settings, caplog):
    rx = Receiver(token="right").start()
    try:
        mon = init("d-4", server=rx.url, token="wrong", settings=fast_settings)
        _steps(mon, range(5))
        time.sleep(0.2)
        _steps(mon, range(5, 12))
        mon.close()
        assert rx.step_numbers("d-4") == []
        assert len(_warnings(caplog, "HTTP 401")) == 1
        spool = Spool(mon.spool_dir)
        assert spool.rejected() and not spool.pending()
        result = upload_spool(spool.dir, rx.url, "right")
        assert result.ok and result.steps_sent == 12
        assert rx.step_numbers("d-4") == list(range(12)) and rx.runs["d-4"]["status"] == "finished"
        assert upload_spool(spool.dir, rx.url, "right").steps_sent == 0  # idempotent: nothing left
    finally:
        rx.stop()


def test_a_later_process_with_the_same_run_resumes_delivery(receiver, fast_settings):
    offline = init("d-5", settings=fast_settings)  # no server: spool only
    _steps(offline, range(20))
    offline.close()
    assert len(Spool(offline.spool_dir).pending()) >= 1 and receiver.step_numbers("d-5") == []
    online = init("d-5", server=receiver.url, settings=fast_settings)
    _steps(online, range(20, 25))
    assert online.flush(10)
    assert receiver.step_numbers("d-5") == list(range(25))
    online.close()


def test_unwritable_spool_still_delivers(receiver, fast_settings, tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings = fast_settings.model_copy(update={"spool_dir": blocker})
    mon = init("d-6", server=receiver.url, settings=settings)
    _steps(mon, range(8))
    assert mon.flush(10)
    mon.close()
    assert receiver.step_numbers("d-6") == list(range(8))
    assert _warnings(caplog, "cannot write")


def test_nonfinite_step_scalars_are_sent_as_is(receiver, fast_settings):
    mon = init("d-7", server=receiver.url, settings=fast_settings)
    mon.end_step(0, loss=math.nan, grad_norm=math.inf, lr=1e-3)
    assert mon.flush(10)
    metrics = receiver.steps["d-7"][0]["metrics"]
    assert metrics["loss"] == "NaN" and metrics["grad_norm"] == "Infinity"
    mon.close()


def test_observe_never_raises_into_training_unless_strict(fast_settings, caplog):
    mon = init("d-8", settings=fast_settings)
    bad = dict(logp_new=torch.zeros(2, 3), logp_old=torch.zeros(2, 4), advantages=torch.ones(2), mask=torch.ones(2, 3))
    mon.observe(**bad)
    mon.observe(**bad)
    assert len(_warnings(caplog, "skipped a micro-batch")) == 1
    ok = dict(logp_new=torch.zeros(2, 3), logp_old=torch.zeros(2, 3), advantages=torch.ones(2), mask=torch.ones(2, 3))
    mon.observe(**ok)
    record = mon.end_step()
    assert record.step == 0 and record.metrics["tokens.count"] == 6 and len(record.histograms["log_ratio"]) == 42
    mon.close()
    strict = init("d-9", settings=fast_settings, strict=True)
    with pytest.raises(InputError, match="logp_old"):
        strict.observe(**bad)
    strict.close()


def test_failed_training_marks_the_run_failed(receiver, fast_settings):
    with pytest.raises(RuntimeError), init("d-10", server=receiver.url, settings=fast_settings) as mon:
        _steps(mon, range(3))
        raise RuntimeError("boom")
    assert receiver.runs["d-10"]["status"] == "failed" and receiver.step_numbers("d-10") == [0, 1, 2]


def test_bad_run_id_and_server_are_config_errors(fast_settings):
    with pytest.raises(ConfigError, match="run id"):
        init("no spaces/here", settings=fast_settings)
    with pytest.raises(ConfigError, match="http"):
        init("ok", server="ftp://x", settings=fast_settings)


def test_cli_upload_sends_an_offline_spool_idempotently(receiver, fast_settings):
    mon = init("d-11", settings=fast_settings, algo="grpo")
    _steps(mon, range(30))
    mon.close()
    root = Path(fast_settings.spool_dir)
    runner = CliRunner()
    first = runner.invoke(app, ["upload", str(root), "--server", receiver.url])
    assert first.exit_code == 0, first.output
    assert "Sent 30 step(s)" in first.output
    assert receiver.step_numbers("d-11") == list(range(30))
    assert receiver.runs["d-11"]["status"] == "finished" and receiver.runs["d-11"]["algorithm"] == "grpo"
    again = runner.invoke(app, ["upload", str(root), "--server", receiver.url])
    assert again.exit_code == 0 and "Sent 0 step(s)" in again.output
    assert receiver.step_numbers("d-11") == list(range(30))


def _spooled_steps(spool: Spool) -> list[int]:
    import gzip
    import json

    steps = []
    for batch_id in spool.pending():
        steps += [s["step"] for s in json.loads(gzip.decompress(spool.read(batch_id)))["steps"]]
    return sorted(steps)


def test_a_full_queue_spills_to_disk_instead_of_dropping(fast_settings, caplog):
    settings = fast_settings.model_copy(update={"queue_size": 1, "flush_interval": 0.5})
    mon = init("d-12", settings=settings)  # offline: every step must end up in the spool
    _steps(mon, range(200))
    mon.close()
    assert _spooled_steps(Spool(mon.spool_dir)) == list(range(200))
    assert len(_warnings(caplog, "queue full")) == 1


def test_steps_after_close_are_kept_on_disk(receiver, fast_settings, caplog):
    mon = init("d-13", server=receiver.url, settings=fast_settings)
    _steps(mon, range(3))
    mon.close()
    _steps(mon, range(3, 5))  # e.g. a trainer that keeps going after an early close
    assert receiver.step_numbers("d-13") == [0, 1, 2]
    assert _spooled_steps(Spool(mon.spool_dir)) == [3, 4]
    assert _warnings(caplog, "was closed")


def test_upload_twice_never_reopens_a_finished_run_nor_invents_runs(receiver, fast_settings):
    mon = init("d-14", settings=fast_settings)  # offline
    _steps(mon, range(4))
    mon.close()
    (Path(fast_settings.spool_dir) / "empty-folder" / "batches").mkdir(parents=True)  # a spool with nothing
    root = Path(fast_settings.spool_dir)
    assert upload_spool(root, receiver.url).steps_sent == 4
    assert receiver.runs["d-14"]["status"] == "finished"
    receiver_put = receiver.runs.copy()
    again = upload_spool(root, receiver.url)
    assert again.ok and again.steps_sent == 0 and again.runs == []
    assert receiver.runs == receiver_put and receiver.runs["d-14"]["status"] == "finished"
    assert "empty-folder" not in receiver.runs
    # A late batch of a finished run is uploaded with a PUT that carries no status (the run keeps its own).
    Spool(root / "d-14").put(encode_batch([]))
    upload_spool(root, receiver.url)
    assert receiver.runs["d-14"].get("status") != "running"


def test_no_test_writes_into_the_home_spool():
    import os

    assert not os.environ["SAPO_MONITOR_SPOOL_DIR"].startswith(str(Path.home() / ".cache"))
