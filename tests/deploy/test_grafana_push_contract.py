"""Contract test of ``sapo-monitor grafana push`` against a recorder that answers as Grafana's API documents."""

from __future__ import annotations

import json

import pytest
import typer
from sapo_monitor.dashboards import DASHBOARD_FILES, load_dashboards
from typer.testing import CliRunner

from sapo_monitor.cli import grafana as grafana_cli
from tests.deploy.fake_grafana import FakeGrafana

TOKEN = "glsa_test_token_123"
UIDS = [d["uid"] for d in load_dashboards().values()]


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root (so that `grafana` stays a subcommand)."""

    grafana_cli.register(app)
    return app


def _push(url: str, *extra: str, token: str = TOKEN) -> tuple[int, str]:
    result = CliRunner().invoke(_cli(), ["grafana", "push", "--url", url, "--token", token, *extra])
    return result.exit_code, result.output


def _actions(output: str) -> dict[str, str]:
    """uid -> action, from the report lines ``<action> <kind> <uid> <title>``."""
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in {"created", "updated", "unchanged"}:
            out[parts[2]] = parts[0]
    return out


def test_first_push_creates_folder_and_every_dashboard() -> None:
    with FakeGrafana(TOKEN) as grafana:
        code, out = _push(grafana.url)
        assert code == 0, out
        assert _actions(out) == {"sapo-monitor": "created", **dict.fromkeys(UIDS, "created")}
        assert f"{len(UIDS) + 1} created, 0 updated, 0 unchanged" in out
        # Every request carried the token as Grafana expects it.
        assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in grafana.state.requests)
        posts = [r for r in grafana.writes() if r.path == "/api/dashboards/db"]
        assert len(posts) == len(DASHBOARD_FILES)
        for post in posts:
            assert post.body["folderUid"] == "sapo-monitor"
            assert post.body["overwrite"] is True
            assert post.body["dashboard"]["id"] is None  # create-or-replace by uid, never by numeric id
        stored = grafana.state.dashboards["sapo-run-stability"]["dashboard"]
        shipped = load_dashboards()["run-stability.json"]
        assert stored["panels"] == shipped["panels"]
        assert stored["templating"] == shipped["templating"]


def test_second_push_is_a_no_op() -> None:
    with FakeGrafana(TOKEN) as grafana:
        assert _push(grafana.url)[0] == 0
        before = len(grafana.writes())
        code, out = _push(grafana.url)
        assert code == 0, out
        assert set(_actions(out).values()) == {"unchanged"}
        assert "0 created, 0 updated" in out
        assert len(grafana.writes()) == before, "an unchanged push must not write"


def test_dashboard_edited_in_grafana_is_put_back() -> None:
    with FakeGrafana(TOKEN) as grafana:
        assert _push(grafana.url)[0] == 0
        stored = grafana.state.dashboards["sapo-service-health"]["dashboard"]
        stored["title"] = "edited by hand"
        stored["panels"] = stored["panels"][:2]
        stored["version"] += 1
        code, out = _push(grafana.url)
        assert code == 0, out
        actions = _actions(out)
        assert actions.pop("sapo-service-health") == "updated"
        assert set(actions.values()) == {"unchanged"}
        restored = grafana.state.dashboards["sapo-service-health"]["dashboard"]
        assert restored["title"] == load_dashboards()["service-health.json"]["title"]
        assert len(restored["panels"]) == len(load_dashboards()["service-health.json"]["panels"])


def test_dashboard_moved_to_another_folder_is_moved_back() -> None:
    with FakeGrafana(TOKEN) as grafana:
        assert _push(grafana.url)[0] == 0
        grafana.state.dashboards["sapo-run-comparison"]["folderUid"] = ""
        code, out = _push(grafana.url)
        assert code == 0, out
        assert _actions(out)["sapo-run-comparison"] == "updated"
        assert grafana.state.dashboards["sapo-run-comparison"]["folderUid"] == "sapo-monitor"


def test_datasource_created_then_unchanged_then_updated() -> None:
    with FakeGrafana(TOKEN) as grafana:
        code, out = _push(grafana.url, "--datasource", "http://prometheus:9090")
        assert code == 0, out
        assert _actions(out)["sapo-prometheus"] == "created"
        ds = grafana.state.datasources["sapo-prometheus"]
        assert (ds["type"], ds["url"], ds["access"]) == ("prometheus", "http://prometheus:9090", "proxy")
        # The dashboards open on the pushed datasource.
        stored = grafana.state.dashboards["sapo-run-stability"]["dashboard"]
        var = next(v for v in stored["templating"]["list"] if v["type"] == "datasource")
        assert var["current"]["value"] == "sapo-prometheus"

        # Grafana adds jsonData defaults of its own: not a reason to write again.
        code, out = _push(grafana.url, "--datasource", "http://prometheus:9090")
        assert set(_actions(out).values()) == {"unchanged"}, out

        code, out = _push(grafana.url, "--datasource", "http://prom.internal:9090")
        assert _actions(out)["sapo-prometheus"] == "updated"
        assert grafana.state.datasources["sapo-prometheus"]["url"] == "http://prom.internal:9090"
        puts = [r for r in grafana.writes() if r.path == "/api/datasources/uid/sapo-prometheus"]
        assert len(puts) == 1 and puts[0].method == "PUT"


def test_folder_renamed_in_grafana_is_updated() -> None:
    with FakeGrafana(TOKEN) as grafana:
        assert _push(grafana.url)[0] == 0
        grafana.state.folders["sapo-monitor"]["title"] = "renamed"
        code, out = _push(grafana.url)
        assert code == 0, out
        assert _actions(out)["sapo-monitor"] == "updated"
        assert grafana.state.folders["sapo-monitor"]["title"] == "sapo-monitor"


def test_wrong_token_fails_with_a_clear_message_and_writes_nothing() -> None:
    with FakeGrafana(TOKEN) as grafana:
        code, out = _push(grafana.url, token="wrong")
        assert code == 1
        assert "401" in out and "--token" in out
        assert not grafana.state.dashboards and not grafana.state.folders


def test_unreachable_grafana_fails_cleanly() -> None:
    with FakeGrafana(TOKEN) as grafana:
        url = grafana.url
    code, out = _push(url)  # server closed: connection refused
    assert code == 1
    assert "cannot reach Grafana" in out


@pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
def test_pushed_body_is_plain_json(name: str) -> None:
    # What we send must survive a JSON round trip unchanged (no NaN, no tuples, no sets).
    dash = load_dashboards()[name]
    assert json.loads(json.dumps(dash, allow_nan=False)) == dash


def test_push_is_registered_on_the_sapo_monitor_command() -> None:
    from sapo_monitor.cli.main import app

    result = CliRunner().invoke(app, ["grafana", "push", "--help"])
    assert result.exit_code == 0 and "--datasource" in result.output
