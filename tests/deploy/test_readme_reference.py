"""The README's configuration reference lists every SAPO_MONITOR_ setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer.main
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.dashboards import load_dashboards
from sapo_monitor.service.outbox.settings import AlertingSettings
from sapo_monitor.service.settings import Settings

from sapo_monitor.cli.main import app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
REFERENCE = README[README.index("### Configuration reference") :]


def _cli_envvars(command: click.Command) -> set[str]:
    found = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    for sub in getattr(command, "commands", {}).values():
        found |= _cli_envvars(sub)
    return found


def test_every_setting_is_in_the_configuration_reference() -> None:
    names = {
        f"SAPO_MONITOR_{f.upper()}"
        for cls in (Settings, AlertingSettings, ClientSettings)
        for f in cls.model_fields
    }
    names |= {n for n in _cli_envvars(typer.main.get_command(app)) if n.startswith("SAPO_MONITOR_")}
    listed = set(re.findall(r"`(SAPO_MONITOR_[A-Z0-9_]+)`", REFERENCE))
    missing = sorted(names - listed)
    assert not missing, f"add to the README configuration reference: {missing}"


def test_readme_names_every_dashboard() -> None:
    for dashboard in load_dashboards().values():
        assert f"`{dashboard['uid']}`" in README
