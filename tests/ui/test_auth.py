"""Auth on: the page asks for a read token once, keeps it in session storage, sends it as a Bearer
header; nothing is shown without it, and a wrong token is asked for again."""

from __future__ import annotations

from typing import Any

import httpx
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings
from sapo_monitor.service.storage import migrate
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.tokens import create_token

from tests.support.live import serve_in_thread
from tests.ui.browser import console_errors


def _tokens(url: str) -> tuple[str, str]:
    db = Database(url, pool_size=2)
    try:
        with db.write() as session:
            read, _ = create_token(session, project="secret", role="read")
            ingest, _ = create_token(session, project="secret", role="ingest")
    finally:
        db.dispose()
    return read, ingest


def test_the_page_asks_for_a_read_token_and_shows_nothing_without_it(tmp_path, page: Any) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/auth.db"
    migrate.upgrade(url)
    read, ingest = _tokens(url)
    app = create_app(Settings(db=url, host="127.0.0.1", port=0, auth="on"))
    with serve_in_thread(app, timeout=30) as base:
        h = {"authorization": f"Bearer {ingest}"}
        assert httpx.put(f"{base}/api/v1/runs/hidden-run", json={"project": "secret", "name": "hidden"},
                         headers=h).status_code in (200, 201)
        assert httpx.get(f"{base}/api/v1/runs").status_code == 401
        errors = console_errors(page)
        page.goto(base + "/#/runs")
        dialog = page.locator("#token-dialog")
        dialog.wait_for(state="visible")
        assert page.locator("#runs-table tbody tr").count() == 0
        assert "hidden" not in page.locator("main").text_content()
        page.fill("#token-input", "smt_wrong")
        page.click("#token-form button")
        page.wait_for_function("() => document.getElementById('token-why').textContent.includes('refused')")
        assert dialog.is_visible()
        page.fill("#token-input", read)
        page.click("#token-form button")
        page.wait_for_selector("#runs-table tr[data-run='hidden-run']")
        assert page.evaluate("() => sessionStorage.getItem('sapo-monitor.token')") == read
        assert page.context.cookies() == []
        page.reload()  # same tab: the token is remembered, no second prompt
        page.wait_for_selector("#runs-table tr[data-run='hidden-run']")
        assert not dialog.is_visible()
    assert [e for e in errors if "401" not in e] == []
