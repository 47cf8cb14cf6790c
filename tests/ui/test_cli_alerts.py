"""``sapo-monitor alerts`` against the real service the UI tests use, and its plain-text cells."""

from __future__ import annotations

import subprocess

from rich.console import Console

from sapo_monitor.cli.alerts import alerts_table
from tests.support.live import CLI
from tests.ui.conftest import UiService


def _cli(ui: UiService, *args: str) -> str:
    out = subprocess.run([str(CLI), "alerts", "--server", ui.base, *args], capture_output=True, text=True, timeout=60,
                         env={"COLUMNS": "220", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_alerts_lists_firing_alerts_of_one_run_as_a_table(ui: UiService) -> None:
    firing = ui.api("/alerts", state="firing", run="collapse")
    text = _cli(ui, "--run", "collapse", "--state", "firing")
    assert f"{len(firing)} alerts" in text
    for a in firing:
        assert a["rule"] in text
    assert "sapo-40" not in text
    assert "critical" in text and "firing" in text


def test_alerts_rejects_an_unknown_state(ui: UiService) -> None:
    out = subprocess.run([str(CLI), "alerts", "--server", ui.base, "--state", "burning"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "--state" in out.stderr


def test_user_text_is_shown_not_interpreted_as_markup() -> None:
    doc = {"state": "firing", "severity": "warning", "rule": "[bold red]x[/bold red]", "run_id": "[link=http://e]r",
           "project": "p", "started_step": 3, "fired_step": 4, "resolved_step": None, "values": {"note": "[/]"}}
    console = Console(record=True, width=200)
    console.print(alerts_table([doc], title="1 alerts"))
    text = console.export_text()
    assert "[bold red]x[/bold red]" in text and "[link=http://e]r" in text and "note=[/]" in text


def test_the_client_prints_the_run_page_url_when_it_starts(ui: UiService, tmp_path, capfd) -> None:  # type: ignore[no-untyped-def]
    from sapo_monitor import client

    mon = client.init("printed-url", project="ui", server=ui.base, spool_dir=tmp_path)
    mon.close(timeout=10)
    err = capfd.readouterr().err
    assert f"{ui.base}/#/run/printed-url" in err
