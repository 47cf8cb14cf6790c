"""The CLI prints stored user data as plain text: Rich markup, hyperlinks and escape sequences in a
run's fields are shown, never interpreted (issue 15, item 23)."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from sapo_monitor.cli._plain import plain, safe
from sapo_monitor.cli.main import app

from .conftest import live_service
from .util import post_steps

runner = CliRunner()
HOSTILE = "[/bold][link=http://evil.example]x[/link]\x1b[31mred\x07"


def test_plain_keeps_markup_and_replaces_control_characters() -> None:
    assert plain("[/bold]").plain == "[/bold]"
    assert "\x1b" not in plain(HOSTILE).plain and "\x07" not in safe(HOSTILE)
    assert plain("a\tb").plain == "a\tb"


def test_runs_show_and_list_render_stored_markup_verbatim(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/svc.db") as base, httpx.Client(base_url=base) as c:
        r = c.put("/api/v1/runs/rx", json={"project": "p", "algorithm": HOSTILE, "tags": {"k": "[bold]v"}})
        assert r.status_code < 300, r.text
        post_steps(c, "rx", [{"step": 0, "metrics": {"loss": 1.0}}])
        for args in (["runs", "show", "rx"], ["runs", "list"]):
            out = runner.invoke(app, [*args, "--server", base], env={"COLUMNS": "300"})
            assert out.exit_code == 0, out.output
            assert "[/bold][link=http://evil.example]x[/link]" in out.output.replace("\n", "")
            assert "\x1b" not in out.output and "\x07" not in out.output
        out = runner.invoke(app, ["runs", "show", "rx", "--server", base], env={"COLUMNS": "300"})
        assert "k=[bold]v" in out.output
