"""Every PromQL expression of every dashboard, evaluated by a real Prometheus scraping the real service.

The service runs as ``sapo-monitor serve`` (uvicorn, temporary SQLite) on a free port; the bundled
trainer streams two runs to it through the client (a dense SAPO run and a stress MoE run whose rollout
engine routes noisily, so the MoE and mismatch metrics exist); a local webhook receiver is subscribed
so webhook delivery metrics exist. Prometheus (Debian's package) scrapes it every second with the
shipped ``dashboards/prometheus.yml`` (addresses swapped for the test's) and the alerting rules loaded,
with auth on as in docker-compose (Prometheus sends a read token from its credentials file).
Then each expression goes through Prometheus's HTTP query API: it must parse and return data, and
every metric a dashboard names must be one the service exported.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sapo_monitor.dashboards import DASHBOARD_FILES, load_dashboards

from sapo_monitor.demo.receiver import WebhookReceiver
from sapo_monitor.demo.server import ServiceProcess, free_port, start_service
from tests.deploy.dashboard_queries import PROMETHEUS_OWN, metric_names, queries, substitute, variable_queries

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "deploy-it"
DENSE_RUN = "it-sapo-dense"
MOE_RUN = "it-pg-moe-mismatch"
STEPS = {DENSE_RUN: 24, MOE_RUN: 32}


@dataclass
class Stack:
    service: ServiceProcess
    prometheus: str
    started: float
    exported: set[str]


def _prometheus_config(service_port: int, workdir: Path, read_token: str) -> Path:
    """The shipped prometheus.yml with the test's address, a 1 s scrape, the rule file by absolute path,
    and its token file (same relative path as shipped) holding a real ``read`` token."""
    cfg = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(ROOT / "dashboards" / f) for f in cfg["rule_files"]]
    cfg.pop("alerting")  # no Alertmanager here; the rules still evaluate
    (job,) = cfg["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
    token_file = workdir / job["authorization"]["credentials_file"]
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(read_token + "\n")
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _poll(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    return None


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    value = _poll(predicate, timeout)
    if not value:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return value


def _instant(prom: str, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{prom}/api/v1/query", params={"query": query}, timeout=10.0)
    resp.raise_for_status()
    return resp.json()["data"]["result"]


def _create_token(db_url: str, role: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "sapo_monitor", "token", "create", "--project", PROJECT, "--role", role, "--db", db_url],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip()


def _train(service_url: str, token: str, run: str, **overrides: Any) -> None:
    from sapo_monitor.client import attach
    from sapo_monitor.trainer import Trainer, make_config

    trainer = Trainer(make_config(steps=STEPS[run], seed=3, **overrides))
    monitor = attach(trainer, run=run, project=PROJECT, server=service_url, token=token)
    try:
        trainer.train()
    finally:
        monitor.close()


def _add_rules(api: str, headers: dict[str, str]) -> None:
    # Built-in rules fire on real trouble only; these two fire at once so the alert panels and
    # both annotation queries (critical and warning) have something to show.
    for severity in ("critical", "warning"):
        rule = {
            "id": f"it-always-{severity}",
            "kind": "threshold",
            "severity": severity,
            "params": {"metric": "tokens.count", "op": ">", "value": 0},
            "for_steps": 1,
            "project": PROJECT,
            "description": "Integration test: fires on every step.",
        }
        httpx.post(f"{api}/rules", json=rule, headers=headers, timeout=10.0).raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = shutil.which("prometheus")
    assert prometheus_bin, "prometheus missing: run `make prometheus` (Debian package prometheus)"
    workdir = tmp_path_factory.mktemp("prom-it")
    port = free_port()
    receiver = WebhookReceiver().start()
    # Auth on, as in docker-compose: Prometheus scrapes with a read token, the client sends with its own.
    db_url = f"sqlite:///{workdir / 'it.db'}"
    admin, reader = _create_token(db_url, "admin"), _create_token(db_url, "read")
    headers = {"Authorization": f"Bearer {admin}"}
    service = start_service(
        db_url,
        port,
        workdir / "service.log",
        env={"SAPO_MONITOR_ACTIVE_WINDOW": "PT1H", "SAPO_MONITOR_AUTH": "on",
             "SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"},  # the receivers are on loopback
    )
    prom_port = free_port()
    prom = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={_prometheus_config(port, workdir, reader)}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    prom_url = f"http://127.0.0.1:{prom_port}"
    try:
        _wait(lambda: _ready(prom_url), 30, "Prometheus to be ready")
        started = time.time()
        api = f"{service.url}/api/v1"
        # One receiver that answers, one address nobody listens on: delivered and retry outcomes both exist.
        for url in (receiver.url, f"http://127.0.0.1:{free_port()}/down"):
            hook = {
                "url": url,
                "project": PROJECT,
                "min_severity": "warning",
                "format": "json",
                "secret": "it-secret",
            }
            httpx.post(f"{api}/webhooks", json=hook, headers=headers, timeout=10.0).raise_for_status()
        _add_rules(api, headers)
        _train(service.url, admin, DENSE_RUN, preset="default", algo="sapo")
        _train(service.url, admin, MOE_RUN, preset="stress", algo="pg")
        if not _poll(lambda: receiver.deliveries(), 40):
            alerts = httpx.get(
                f"{api}/alerts", params={"project": PROJECT}, headers=headers, timeout=10.0
            ).text
            raise AssertionError(
                f"no webhook delivery after 40 s; alerts: {alerts[:1500]}\n{service.log_tail(40)}"
            )
        # Two scrapes after the last step: every counter has moved inside one rate window.
        _wait(lambda: _instant(prom_url, f'sapo_run_last_step{{run="{MOE_RUN}"}} >= {STEPS[MOE_RUN] - 1}'), 20,
              "Prometheus to scrape the last step")  # fmt: skip
        time.sleep(2.5)
        names = {
            r["metric"]["__name__"] for r in _instant(prom_url, 'count by (__name__) ({__name__=~"sapo_.+"})')
        }
        yield Stack(service, prom_url, started, names)
    finally:
        prom.terminate()
        prom.wait(10)
        service.stop()
        receiver.stop()


def _ready(prom: str) -> bool:
    try:
        return httpx.get(f"{prom}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _range(stack: Stack, expr: str) -> tuple[str | None, int]:
    """(error, number of series with points) for ``expr`` over the test's time window."""
    resp = httpx.get(
        f"{stack.prometheus}/api/v1/query_range",
        params={"query": expr, "start": stack.started - 5, "end": time.time(), "step": "1s"},
        timeout=30.0,
    )
    body = resp.json()
    if resp.status_code != 200 or body.get("status") != "success":
        return f"{resp.status_code} {body.get('errorType')}: {body.get('error')}", 0
    return None, sum(1 for s in body["data"]["result"] if s.get("values"))


def _variables(name: str) -> dict[str, str]:
    if name == "run-comparison.json":
        return {"project": PROJECT, "run": f"({DENSE_RUN}|{MOE_RUN})"}
    return {"project": PROJECT, "run": MOE_RUN}


@pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
def test_every_dashboard_query_parses_and_returns_data(stack: Stack, name: str) -> None:
    dashboard = load_dashboards()[name]
    failures = []
    for q in queries(name, dashboard):
        expr = substitute(q.expr, _variables(name))
        missing = metric_names(expr) - stack.exported - PROMETHEUS_OWN
        if missing:
            failures.append(f"{q.where}: {sorted(missing)} not exported by the service ({expr})")
            continue
        error, series = _range(stack, expr)
        if error or not series:
            failures.append(f"{q.where}: {error or 'no data'} ({expr})")
    assert not failures, f"{name}:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", ["run-comparison.json", "run-stability.json"])
def test_template_variables_list_the_runs(stack: Stack, name: str) -> None:
    for q in variable_queries(name, load_dashboards()[name]):
        selector = substitute(q.expr, {"project": PROJECT})
        resp = httpx.get(
            f"{stack.prometheus}/api/v1/series",
            params={"match[]": selector, "start": stack.started - 5, "end": time.time()},
            timeout=10.0,
        )
        assert resp.status_code == 200, resp.text
        labels = {s.get("project") for s in resp.json()["data"]} | {s.get("run") for s in resp.json()["data"]}
        assert PROJECT in labels and {DENSE_RUN, MOE_RUN} <= labels, (q.where, labels)


def test_a_dashboard_naming_an_unexported_metric_would_fail(stack: Stack) -> None:
    # The check above is only as good as its ability to fail: a misspelt gauge gives no data.
    error, series = _range(stack, f'sapo_log_ratio_stdev{{run="{MOE_RUN}"}}')
    assert error is None and series == 0
    assert "sapo_log_ratio_stdev" not in stack.exported
    error, _ = _range(stack, "sum by (le (sapo_log_ratio_bucket)")
    assert error and "bad_data" in error


def test_prometheus_loaded_the_alerting_rules(stack: Stack) -> None:
    resp = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10.0)
    groups = resp.json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules, "prometheus-rules.yml loaded no rule"
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_prometheus_scraped_with_its_token(stack: Stack) -> None:
    # Auth really was on: /metrics refuses a caller without a token, yet Prometheus's target is up.
    assert httpx.get(f"{stack.service.url}/metrics", timeout=10.0).status_code == 401
    targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10.0).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"], [t.get("lastError") for t in targets]
