"""The distribution's shape: every import package is listed, and the import boundaries hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    found = set()
    for name, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            if {".venv", "__pycache__"} & set(init.parts):
                continue
            found.add(".".join((name, *init.parent.relative_to(base).parts)))
    missing = sorted(found - set(setuptools["packages"]))
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_client_import_is_light() -> None:
    mods = _imported_after("import sapo_monitor.client")
    heavy = {"torch", "fastapi", "sqlalchemy", "trl", "transformers"} & mods
    assert not heavy, f"importing the client pulled in {heavy}"
    assert not any(m.startswith("sapo_monitor.service") for m in mods)


def test_service_imports_neither_trainer_nor_torch() -> None:
    mods = _imported_after("import sapo_monitor.service.app")
    assert "torch" not in mods
    assert not any(m.startswith("sapo_monitor.trainer") for m in mods)
    # The wire package (and its own modules) is the one part of the client the service may import.
    client_mods = {m for m in mods if m.startswith("sapo_monitor.client")}
    beyond_wire = {m for m in client_mods - {"sapo_monitor.client"} if not m.startswith("sapo_monitor.client.wire")}
    assert not beyond_wire, beyond_wire


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sapo_monitor", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for command in ("train", "serve", "db", "upload", "compare", "demo"):
        assert command in out, f"`sapo-monitor --help` does not list {command}"
