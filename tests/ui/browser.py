"""Debian's chromium driven by Playwright for Python, launched by path (Playwright's own browser
download is not used), with a throw-away profile; pages record their console errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "chromium", "console_errors", "screenshot_dir"]

CHROMIUM = os.environ.get("SAPO_MONITOR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright browser context (1400x900) on Debian's chromium, profile in a temp folder."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sapo-ui-profile-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1400, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()


def console_errors(page: Any) -> list[str]:
    """A list that fills with the page's console errors and uncaught exceptions."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def screenshot_dir(default: Path) -> Path:
    """Where the tests write their screenshots: ``SAPO_MONITOR_UI_SHOTS`` or ``default`` (a temp folder)."""
    d = Path(os.environ.get("SAPO_MONITOR_UI_SHOTS") or default)
    d.mkdir(parents=True, exist_ok=True)
    return d
