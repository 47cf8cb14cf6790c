"""``sapo-monitor rules backtest``: replay stored runs, or spool / trace files, through the current
rules or a candidate rule file, and print per run what would have fired and when.

Nothing is written: stored alerts stay as they are and no webhook is sent. The replay is the service's
own evaluation (:func:`sapo_monitor.service.rules.replay.replay`), run in this process.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import typer

from sapo_monitor.cli._service_http import SERVER, TOKEN, get_json

__all__ = ["read_records", "register"]

rules_app = typer.Typer(help="Alert rules: backtest them on recorded runs.", no_args_is_help=True)


def _records_from_doc(doc: Any) -> list[Any]:
    from sapo_monitor.client.wire import decode_float
    from sapo_monitor.service.rules.evaluate import StepInput

    steps: list[Any] = doc["steps"] if isinstance(doc, dict) and isinstance(doc.get("steps"), list) else [doc]
    out = []
    for s in steps:
        metrics = {k: decode_float(v) for k, v in (s.get("metrics") or {}).items()
                   if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        out.append(StepInput(int(s["step"]), s.get("time"), metrics))
    return out


def read_records(path: Path) -> dict[str, list[Any]]:
    """Step records per run from a spool folder (every run folder under it: sent-and-waiting, rejected
    and open segments) or one file: a batch body (JSON, gzip or not) or JSON lines of step records."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and
                                                 p.suffix in (".json", ".jsonl", ".gz", ".batch"))
    runs: dict[str, list[Any]] = {}
    for f in files:
        data = f.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        try:
            docs = [json.loads(data)]
        except ValueError:
            docs = [json.loads(line) for line in data.splitlines() if line.strip()]
        if docs and isinstance(docs[0], dict) and "steps" not in docs[0] and "step" not in docs[0]:
            continue  # a run document (run.json), not steps
        run_id = path.stem if path.is_file() else _run_of(f, path)
        for doc in docs:
            runs.setdefault(run_id, []).extend(_records_from_doc(doc))
    return runs


def _run_of(f: Path, root: Path) -> str:
    parts = f.relative_to(root).parts
    # <root>/<run>/batches/<id>.json or <root>/<project>/<run>/...: the folder above batches/ names the run
    for i, part in enumerate(parts):
        if part in ("batches", "rejected", "segments"):
            return parts[i - 1] if i else root.name
    return parts[-2] if len(parts) > 1 else root.name


def _fetch_run(server: str, token: str | None, run_id: str) -> list[Any]:
    from sapo_monitor.client.wire import decode_float
    from sapo_monitor.service.rules.evaluate import StepInput

    run = get_json(server, token, f"/api/v1/runs/{run_id}")
    names = [m["name"] for m in get_json(server, token, f"/api/v1/runs/{run_id}/metrics")["metrics"]]
    first, last = run.get("first_step"), run.get("last_step")
    if first is None or not names:
        return []
    points = max(2, last - first + 1)
    by_step: dict[int, dict[str, float]] = {}
    per_request = max(1, (2**20) // points)
    for i in range(0, len(names), per_request):
        doc = get_json(server, token, f"/api/v1/runs/{run_id}/series",
                       params={"metric": names[i : i + per_request], "max_points": points})
        for name, series in doc["series"].items():
            for step, value in zip(series["step"], series["value"], strict=True):
                if value is not None:
                    by_step.setdefault(step, {})[name] = decode_float(value)
    return [StepInput(step, float(step), m) for step, m in sorted(by_step.items())]


def _project_runs(server: str, token: str | None, project: str) -> list[str]:
    ids: list[str] = []
    while True:
        page = get_json(server, token, "/api/v1/runs", params={"project": project, "limit": 500, "offset": len(ids)})
        ids += [r["run_id"] for r in page["runs"]]
        if not page["runs"] or len(ids) >= page["total"]:
            return ids


def backtest(
    run: list[str] = typer.Option([], "--run", help="Stored run id to replay (repeatable)."),
    project: str = typer.Option(None, "--project", help="Replay every stored run of this project."),
    file: list[Path] = typer.Option([], "--file", exists=True,
                                    help="A spool folder or a trace file (batch JSON, gzip or not, or JSON lines "
                                         "of step records) to replay (repeatable)."),
    rules_file: Path = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                    help="Candidate rule file (JSON: {\"rules\": [...]}; an entry with a built-in's "
                                         "id overrides it). Default: the built-in pack."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per run) instead of tables."),
    with_pending: bool = typer.Option(False, "--pending", help="Also list alerts that went pending but never fired."),
    server: str = SERVER,
    token: str = TOKEN,
) -> None:
    """Replay runs through the rules and print, per run, each alert that would have gone pending,
    fired and resolved (steps). Nothing is stored and no webhook is sent."""
    from sapo_monitor.service.rules.builtin import BUILTIN_RULES
    from sapo_monitor.service.rules.model import RuleValidationError
    from sapo_monitor.service.rules.replay import load_rule_file, replay

    if not (run or project or file):
        raise typer.BadParameter("give --run, --project or --file", param_hint="--run")
    rules = list(BUILTIN_RULES)
    if rules_file is not None:
        try:
            rules = load_rule_file(json.loads(rules_file.read_text()))
        except (ValueError, RuleValidationError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--rules") from None
    sources: dict[str, list[Any]] = {}
    for f in file:
        sources.update(read_records(f))
    run_ids = list(dict.fromkeys(run + (_project_runs(server, token, project) if project else [])))
    for rid in run_ids:
        sources[rid] = _fetch_run(server, token, rid)
    results = [replay(rules, records, run_id=rid) for rid, records in sources.items()]
    if as_json:
        for r in results:
            typer.echo(json.dumps({"run_id": r.run_id, "steps": r.steps,
                                   "first_warning": r.first_step("warning"), "first_critical": r.first_step("critical"),
                                   "alerts": [vars(a) for a in r.alerts]}))
        return
    _print_tables(results, with_pending=with_pending)


def _print_tables(results: list[Any], *, with_pending: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from sapo_monitor.cli._plain import plain

    console = Console()
    for r in results:
        shown = [a for a in r.alerts if with_pending or a.fired_step is not None]
        fired = sum(a.fired_step is not None for a in r.alerts)
        first = r.first_step("critical")
        table = Table("rule", "severity", "pending", "fired", "resolved",
                      title=plain(f"{r.run_id}: {r.steps} steps, {fired} alerts fired, first critical at step "
                                 f"{'-' if first is None else first}"))
        for a in shown:
            cells = [a.rule, a.severity, a.pending_step, a.fired_step, a.resolved_step]
            table.add_row(*[plain("-" if c is None else c) for c in cells])
        console.print(table)


def register(app: typer.Typer) -> None:
    rules_app.command("backtest")(backtest)
    app.add_typer(rules_app, name="rules")
