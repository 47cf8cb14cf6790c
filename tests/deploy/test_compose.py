"""Structure of the deployment files (no Docker engine here): compose, Dockerfile, Prometheus, Alertmanager."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from sapo_monitor.demo.server import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ENV_EXAMPLE = ROOT / ".env.example"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.I)
VAR_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for vol in service.get("volumes", []):
        source, target, *_ = vol.split(":")
        out.append((source, target))
    return out


def _container_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(published host binding, container port) per entry of ``ports``."""
    out = []
    for entry in service.get("ports", []):
        *host, container = str(entry).split(":")
        out.append((":".join(host), int(container)))
    return out


def _host_port(url_or_target: str) -> tuple[str, int]:
    m = re.search(r"(?:https?://)?([a-z0-9-]+):(\d+)", url_or_target)
    assert m, url_or_target
    return m.group(1), int(m.group(2))


def _listens_on(name: str) -> int:
    """The port a compose service listens on inside its container."""
    known = {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000, "postgres": 5432}
    if name in known:
        return known[name]
    return int(_env(SERVICES[name])["SAPO_MONITOR_PORT"])


def test_expected_services() -> None:
    assert set(SERVICES) == {"postgres", "sapo-monitor", "prometheus", "alertmanager", "grafana"}


def test_every_bind_mount_exists_and_every_named_volume_is_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = set()
    for name, service in SERVICES.items():
        for source, target in _mounts(service):
            assert target.startswith("/"), f"{name}: {target}"
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source} not declared under volumes:"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"
    # Data lives in named volumes, so `docker compose down` keeps it.
    for name in ("postgres", "prometheus", "alertmanager", "grafana"):
        assert any(not s.startswith((".", "/")) for s, _ in _mounts(SERVICES[name])), name


def test_dependencies_exist_and_have_no_cycle() -> None:
    graph = {n: list(s.get("depends_on", [])) for n, s in SERVICES.items()}
    for name, deps in graph.items():
        for dep in deps:
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
    seen: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle {' -> '.join((*path, node))}"
        if node in seen:
            return
        for dep in graph[node]:
            visit(dep, (*path, node))
        seen.add(node)

    for node in graph:
        visit(node, ())
    # The service waits for a healthy database before migrating.
    assert SERVICES["sapo-monitor"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["postgres"]


def test_ports_are_consistent() -> None:
    published: dict[str, str] = {}
    for name, service in SERVICES.items():
        for host, container in _container_ports(service):
            assert container == _listens_on(name), (
                f"{name} publishes {container}, listens on {_listens_on(name)}"
            )
            key = host.rsplit(":", 1)[-1]
            assert key not in published, f"host port {key} published by {published[key]} and {name}"
            published[key] = name
    # Unauthenticated UIs stay on loopback.
    for name in ("prometheus", "alertmanager"):
        assert all(h.startswith("127.0.0.1:") for h, _ in _container_ports(SERVICES[name])), name


def test_addresses_between_services_match_compose() -> None:
    prom = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    am_targets = [
        t for a in prom["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]
    ]
    datasources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yml").read_text())
    db_url = _env(SERVICES["sapo-monitor"])["SAPO_MONITOR_DB"]
    for address in [
        *targets,
        *am_targets,
        *(d["url"] for d in datasources["datasources"]),
        db_url.split("@")[1],
    ]:
        host, port = _host_port(address)
        assert host in SERVICES, f"{address}: no compose service {host}"
        assert port == _listens_on(host), f"{address}: {host} listens on {_listens_on(host)}"


def test_grafana_mounts_match_provisioning() -> None:
    targets = {t for _, t in _mounts(SERVICES["grafana"])}
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/sapo-monitor.yml").read_text())
    folder = prov["providers"][0]["options"]["path"]
    shipped = {p.name for p in (ROOT / "dashboards").glob("*.json")}
    assert {f"{folder}/{name}" for name in shipped} <= targets
    home = _env(SERVICES["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in targets
    assert "/etc/grafana/provisioning/datasources" in targets


def test_prometheus_mounts_its_rule_file() -> None:
    prom = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    mounted = {Path(t).name: s for s, t in _mounts(SERVICES["prometheus"])}
    for rule_file in prom["rule_files"]:
        assert rule_file in mounted, f"prometheus.yml loads {rule_file}; compose does not mount it"


def test_no_secret_is_committed() -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for var in VAR_REF.findall(compose_text):
        assert var in example, f"docker-compose.yml uses ${{{var}}}; add it to .env.example"
    for name, service in SERVICES.items():
        for key, value in _env(service).items():
            if SECRET_KEY.search(key):
                assert VAR_REF.fullmatch(value), (
                    f"{name}.{key} must come from .env, not be written in compose"
                )
            if "://" in value and "@" in value:  # credentials inside a URL
                password = value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
                assert VAR_REF.fullmatch(password), f"{name}.{key} has a literal password"
    # The example holds placeholders only, and the real .env is ignored by git and Docker.
    for key, value in example.items():
        if SECRET_KEY.search(key):
            assert value.startswith("change-me"), key
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not tracked.strip()


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]  # the image that ships
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1] not in {"root", "0"}
    health = re.search(r"^HEALTHCHECK .*?CMD (.+)$", final, re.M | re.S)
    assert health and "/healthz" in health.group(1)
    expose = re.findall(r"^EXPOSE\s+(\d+)", final, re.M)
    assert [int(p) for p in expose] == [_listens_on("sapo-monitor")]
    runs = " ".join(re.findall(r"^RUN (.+)$", text, re.M))
    assert "torch" not in runs and "[service]" in runs, "the image installs the service extra, never torch"
    # Everything the Dockerfile copies exists and is not excluded from the build context.
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path
            assert path not in ignored, f"{path} is copied but .dockerignore excludes it"


def test_alertmanager_routes_to_defined_receivers() -> None:
    am = yaml.safe_load((ROOT / "dashboards/alertmanager.yml").read_text())
    receivers = {r["name"] for r in am["receivers"]}

    def walk(route: dict[str, Any]) -> None:
        assert route["receiver"] in receivers if "receiver" in route else True
        for child in route.get("routes", []):
            walk(child)

    assert am["route"]["receiver"] in receivers
    walk(am["route"])
    severities = {m for r in am["route"]["routes"] for m in r.get("matchers", [])}
    assert any("critical" in m for m in severities)


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "promtool missing: run `make prometheus` (Debian package prometheus)"
    # promtool wants every referenced file: the rules next to the config and a (dummy) token file.
    prom = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    shutil.copy(ROOT / "dashboards/prometheus.yml", tmp_path)
    for rule_file in prom["rule_files"]:
        shutil.copy(ROOT / "dashboards" / rule_file, tmp_path)
    token = tmp_path / prom["scrape_configs"][0]["authorization"]["credentials_file"]
    token.parent.mkdir(parents=True)
    token.write_text("sapo_dummy\n")
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_token_file_is_mounted_and_never_committed() -> None:
    prom = yaml.safe_load((ROOT / "dashboards/prometheus.yml").read_text())
    credentials = prom["scrape_configs"][0]["authorization"]["credentials_file"]
    in_container = f"/etc/prometheus/{credentials}"  # relative paths resolve next to the config file
    mounts = _mounts(SERVICES["prometheus"])
    assert any(in_container.startswith(target + "/") for _, target in mounts), in_container
    source = next(s for s, t in mounts if in_container.startswith(t + "/"))
    host_file = ROOT / source / in_container.split("/")[-1]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(host_file)], cwd=ROOT)
    assert ignored.returncode == 0, f"{host_file} must be ignored by git"


def test_alertmanager_config_passes_amtool() -> None:
    assert shutil.which("amtool"), (
        "amtool missing: run `make prometheus` (Debian package prometheus-alertmanager)"
    )
    result = subprocess.run(
        ["amtool", "check-config", str(ROOT / "dashboards/alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of the final stage's CMD or HEALTHCHECK ... CMD."""
    final = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1].replace("\\\n", " ")
    line = next(ln for ln in final.splitlines() if ln.startswith(instruction))
    return json.loads(line[line.index("[") :])


def test_container_command_and_healthcheck_work(tmp_path: Path) -> None:
    # What the image runs, run here: migrations then serve (auth on, as in the image), then its health check.
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SAPO_MONITOR_DB": f"sqlite:///{tmp_path / 'c.db'}",
        "SAPO_MONITOR_HOST": "127.0.0.1",  # the image binds 0.0.0.0; loopback is enough here
        "SAPO_MONITOR_PORT": str(port),
        "SAPO_MONITOR_AUTH": "on",
    }
    health = _dockerfile_json("HEALTHCHECK")
    assert subprocess.run(health, env=env, capture_output=True, timeout=30).returncode != 0  # nothing up yet
    # The documented first step (README): with auth on, the service wants a token before it starts.
    token = subprocess.run(
        ["sapo-monitor", "token", "create", "--project", "p", "--role", "admin"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    proc = subprocess.Popen(
        _dockerfile_json("CMD"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(health, env=env, capture_output=True, timeout=30).returncode != 0:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the container command never became healthy"
            time.sleep(0.5)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10.0)
        assert ready.status_code == 200, ready.text  # the schema was migrated before serving
        runs = f"http://127.0.0.1:{port}/api/v1/runs"
        assert httpx.get(runs, timeout=10.0).status_code == 401  # auth on
        assert httpx.get(runs, headers={"Authorization": f"Bearer {token}"}, timeout=10.0).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)


def test_image_build_context_makes_a_wheel_with_the_dashboards(tmp_path: Path) -> None:
    # The Dockerfile's build stage, without Docker: copy what it copies, build the wheel from that alone.
    build = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]  # the build stage
    context = tmp_path / "ctx"
    context.mkdir()
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", build, re.M):
        for path in src.split():
            if (ROOT / path).is_dir():
                shutil.copytree(ROOT / path, context / path, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / path, context / path)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=context, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("sapo_monitor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in [*(f"sapo_monitor/dashboards/{p.name}" for p in (ROOT / "dashboards").glob("*.json")),
                    "sapo_monitor/dashboards/prometheus.yml", "sapo_monitor/dashboards/prometheus-rules.yml",
                    "sapo_monitor/dashboards/grafana_push.py", "sapo_monitor/migrations/env.py"]:  # fmt: skip
        assert shipped in names, f"{shipped} missing from the wheel"
