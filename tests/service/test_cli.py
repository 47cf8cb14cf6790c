"""The service's CLI: db, token, serve refusing unsafe or outdated setups, runs and compare."""

from __future__ import annotations

import httpx
from sapo_monitor.service.storage import migrate
from typer.testing import CliRunner

from sapo_monitor.cli.main import app

from .conftest import live_service
from .util import post_steps

runner = CliRunner()


def test_db_and_token_commands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path}/cli.db"
    r = runner.invoke(app, ["db", "current", "--db", db])
    assert r.exit_code == 0 and "empty" in r.output
    r = runner.invoke(app, ["db", "upgrade", "--db", db])
    assert r.exit_code == 0 and migrate.head_revision(db) in r.output
    r = runner.invoke(app, ["db", "downgrade", "0001_core", "--db", db])
    assert r.exit_code == 0
    r = runner.invoke(app, ["db", "current", "--db", db])
    assert "behind" in r.output and "sapo-monitor db upgrade" in r.output
    r = runner.invoke(app, ["serve", "--db", db, "--port", "0"])  # refuses an outdated schema
    assert r.exit_code == 2 and "sapo-monitor db upgrade" in r.output
    runner.invoke(app, ["db", "upgrade", "--db", db])
    r = runner.invoke(app, ["serve", "--db", db, "--host", "0.0.0.0", "--auth", "off"])
    assert r.exit_code == 2 and "loopback" in r.output
    r = runner.invoke(app, ["serve", "--db", db, "--host", "0.0.0.0"])  # auth on, but no token yet
    assert r.exit_code == 2 and "token create" in r.output
    r = runner.invoke(app, ["token", "create", "--project", "p", "--role", "read", "--db", db])
    assert r.exit_code == 0
    secret = r.stdout.strip().splitlines()[0]
    assert secret.startswith("sapo_") and len(secret) > 40
    r = runner.invoke(app, ["token", "list", "--db", db])
    assert r.exit_code == 0 and secret[:11] in r.output and secret not in r.output  # only the prefix
    r = runner.invoke(app, ["token", "create", "--project", "p", "--role", "owner", "--db", db])
    assert r.exit_code == 2
    assert runner.invoke(app, ["token", "revoke", "1", "--db", db]).exit_code == 0
    assert runner.invoke(app, ["token", "revoke", "1", "--db", db]).exit_code == 1


def test_runs_and_compare_against_a_live_service(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/svc.db") as base, httpx.Client(base_url=base) as c:
        c.put("/api/v1/runs/ra", json={"project": "p", "algorithm": "sapo", "tags": {"lr": "1e-6"}})
        post_steps(c, "ra", [{"step": s, "metrics": {"reward.mean": s / 10, "loss": 1.0}} for s in range(30)])
        post_steps(c, "rb", [{"step": s, "metrics": {"reward.mean": s / 20, "loss": "NaN"}} for s in range(40)])
        r = runner.invoke(app, ["runs", "list", "--server", base], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "ra" in r.output and "rb" in r.output and "2 runs" in r.output
        r = runner.invoke(app, ["runs", "show", "ra", "--server", base], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "reward.mean" in r.output and "2.9" in r.output and "lr=1e-6" in r.output
        png = tmp_path / "cmp.png"
        r = runner.invoke(app, ["compare", "ra", "rb", "-m", "reward.mean", "-m", "loss", "--server", base,
                                "--plot", str(png)], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        assert "mean last 10%" in r.output and "NaN" in r.output and "-0.95" in r.output  # 1.95 - 2.9
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        r = runner.invoke(app, ["compare", "ra", "nope", "--server", base])
        assert r.exit_code == 1 and "nope" in r.output
