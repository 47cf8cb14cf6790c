"""The README names no file that is not in the repository (issue 15): every path into one of the
repository's folders it mentions exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
FOLDERS = ("bench", "client", "dashboards", "docs", "examples", "migrations", "sapo_monitor", "service", "tests",
           "trainer")
# A path into a folder, not inside a longer word, name or URL (sapo_monitor/kl.k3 is a TRL log key:
# only names with a file extension or a closing slash count as paths there).
_PATH = re.compile(rf"(?<![\w./~:-])((?:{'|'.join(FOLDERS)})/[\w./-]*)")
_FILE_EXT = re.compile(r"\.(?:py|pyi|md|json|ya?ml|toml|txt|sh|js|css|html|ini|cfg|sql|png|svg)$")


def _paths() -> set[str]:
    found = set()
    for m in _PATH.finditer(README):
        path = m.group(1).rstrip(".")
        if path.startswith("sapo_monitor/") and not (_FILE_EXT.search(path) or path.endswith("/")):
            continue
        found.add(path)
    return found


def test_readme_names_only_files_in_the_repository() -> None:
    paths = _paths()
    assert len(paths) > 20  # the pattern still finds the README's paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"the README names files that are not in the repository: {missing}"

