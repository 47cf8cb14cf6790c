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


def _render(renderable: object) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=400, force_terminal=False, color_system=None).print(renderable)
    return buf.getvalue()


def _verbatim(output: str) -> None:
    assert "[/bold][link=http://evil.example]x[/link]" in output.replace("\n", ""), output
    assert "\x1b" not in output and "\x07" not in output


def test_webhooks_list_renders_stored_url_verbatim(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    url = "http://127.0.0.1:9/[/bold][link=http://evil.example]x[/link]\x1b[31mred\x07"
    with live_service(f"sqlite:///{tmp_path}/svc.db") as base:
        with httpx.Client(base_url=base) as c:
            r = c.post("/api/v1/webhooks", json={"url": url.replace("\x1b", "%1B").replace("\x07", "%07")})
            assert r.status_code < 300, r.text
        out = runner.invoke(app, ["webhooks", "list", "--server", base], env={"COLUMNS": "400"})
        assert out.exit_code == 0, out.output
        assert "[/bold][link=http://evil.example]x[/link]" in out.output.replace("\n", "")


def test_token_list_renders_stored_description_verbatim(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path}/tokens.db"
    out = runner.invoke(app, ["token", "create", "--project", "p", "--role", "read", "--description", HOSTILE,
                              "--db", db])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["token", "list", "--db", db], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    _verbatim(out.output)


def test_alerts_table_renders_stored_fields_verbatim() -> None:
    from sapo_monitor.cli.alerts import alerts_table

    doc = {"state": "firing", "severity": "critical", "rule": HOSTILE, "run_id": "r", "project": HOSTILE,
           "started_step": 1, "fired_step": 2, "resolved_step": None, "values": {"note": HOSTILE}}
    _verbatim(_render(alerts_table([doc], title="t")))


def test_alerts_command_prints_service_alerts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/svc.db") as base:
        out = runner.invoke(app, ["alerts", "--server", base], env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output


def test_demo_outcome_table_renders_labels_and_rule_names_verbatim() -> None:
    from sapo_monitor.demo.console import outcome_table
    from sapo_monitor.demo.outcome import AlertEvent, RunOutcome

    event = AlertEvent(rule=HOSTILE, severity="critical", step=3)
    outcome = RunOutcome(run_id="r", algorithm="pg", label=HOSTILE, steps=4, first_warning=event, collapse=event,
                         final_reward=0.5, mean_gate_saturation=0.1, max_log_ratio_std=0.2, alerts=[event])
    _verbatim(_render(outcome_table([outcome], elapsed=1.0)))


def test_rules_backtest_prints_a_trace_files_name_verbatim(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    trace = tmp_path / "[bold]b[link=evil]x\x1b[31m.jsonl"  # the file's stem names the run
    trace.write_text("\n".join(json.dumps({"step": s, "metrics": {"loss": 1.0}}) for s in range(5)) + "\n")
    out = runner.invoke(app, ["rules", "backtest", "--file", str(trace)], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert "[bold]b[link=evil]x\N{REPLACEMENT CHARACTER}[31m: 5 steps" in out.output.replace("\n", "")
    assert "\x1b" not in out.output


def test_compare_prints_stored_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/svc.db") as base, httpx.Client(base_url=base) as c:
        for run in ("ca", "cb"):
            assert c.put(f"/api/v1/runs/{run}", json={"project": "p", "algorithm": HOSTILE}).status_code < 300
            post_steps(c, run, [{"step": s, "metrics": {"loss": float(s)}} for s in range(3)])
        out = runner.invoke(app, ["compare", "ca", "cb", "-m", "loss", "--server", base], env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output
        assert "ca" in out.output and "cb" in out.output and "\x1b" not in out.output


def test_webhooks_test_and_deliveries_print_a_failed_attempt(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.support.live import free_port

    monkeypatch.setenv("SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("SAPO_MONITOR_OUTBOX_POLL_S", "0.05")
    url = f"http://127.0.0.1:{free_port()}/[bold]x[link=http://evil.example]y"  # nothing listens there
    with live_service(f"sqlite:///{tmp_path}/svc.db") as base:
        with httpx.Client(base_url=base) as c:
            hook = c.post("/api/v1/webhooks", json={"url": url}).json()
        out = runner.invoke(app, ["webhooks", "test", str(hook["id"]), "--wait", "3", "--server", base])
        assert "failed" in out.output and "\x1b" not in out.output, out.output
        out = runner.invoke(app, ["webhooks", "deliveries", str(hook["id"]), "--server", base], env={"COLUMNS": "300"})
        assert out.exit_code == 0 and "error" in out.output, out.output
        out = runner.invoke(app, ["webhooks", "list", "--server", base], env={"COLUMNS": "400"})
        assert "[bold]x[link=http://evil.example]y" in out.output.replace("\n", ""), out.output
