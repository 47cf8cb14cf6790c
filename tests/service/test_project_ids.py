"""A project's id is cached only once committed: a failed first request leaves the project usable
(issue 15 item 1), and concurrent first requests never see an id that is not committed yet."""

from __future__ import annotations

import threading

import httpx
import pytest
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.migrate import ensure_schema
from sapo_monitor.service.storage.runs import ensure_project

from .conftest import BOTH
from .util import batch, post_steps


@BOTH
def test_a_rolled_back_first_request_does_not_poison_the_project(service: httpx.Client) -> None:
    assert service.put("/api/v1/runs/r1", json={"project": "p1"}).status_code == 200
    # The first request into p2 creates p2, then fails (the run id is p1's) and rolls back.
    assert service.put("/api/v1/runs/r1", json={"project": "p2"}).status_code == 403
    r = service.put("/api/v1/runs/r2", json={"project": "p2"})
    assert r.status_code == 200, r.text  # was 503: the cached id of the rolled-back project
    assert r.json()["project"] == "p2"
    assert post_steps(service, "r2", batch(range(3))).status_code == 200


@BOTH
def test_cache_holds_committed_ids_only(db_url: str) -> None:
    db = Database(db_url, pool_size=4)
    try:
        ensure_schema(db.engine)
        with pytest.raises(RuntimeError), db.write() as session:
            ensure_project(session, "gone", cache=db.project_ids)
            raise RuntimeError("roll back")
        assert "gone" not in db.project_ids
        with db.write() as session:
            pid = ensure_project(session, "kept", cache=db.project_ids)
            assert "kept" not in db.project_ids  # not before the commit
        assert db.project_ids["kept"] == pid
        with db.write() as session:  # read back from a committed row: cached at once
            db.project_ids.clear()
            assert ensure_project(session, "kept", cache=db.project_ids) == pid
            assert db.project_ids["kept"] == pid
    finally:
        db.dispose()


@BOTH
def test_concurrent_first_requests_into_a_new_project(service: httpx.Client) -> None:
    codes: list[int] = []
    base = str(service.base_url)

    def put(i: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            codes.append(c.put(f"/api/v1/runs/c{i}", json={"project": "fresh"}).status_code)
            codes.append(post_steps(c, f"c{i}", batch(range(2))).status_code)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 16
    assert service.get("/api/v1/runs", params={"project": "fresh"}).json()["total"] == 8
