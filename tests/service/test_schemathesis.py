"""schemathesis against the live service's OpenAPI: no 5xx and no response that breaks the schema,
with auth off, with an admin token and with a read token, on SQLite and on PostgreSQL.

The CLI (``st run``) cannot send requests in this environment (``urllib3-future`` shadows urllib3 and
breaks ``requests``), so the same checks run through the Python API, with requests sent over real HTTP
by httpx to the service running under uvicorn. Examples per operation are bounded to keep ``make test``
short: ``SAPO_TEST_SCHEMATHESIS_EXAMPLES`` (default 3) raises them for a longer run by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.postgres import pg_database

from .conftest import live_service, make_token
from .util import batch, post_steps

MAX_EXAMPLES = int(os.environ.get("SAPO_TEST_SCHEMATHESIS_EXAMPLES", "3"))
# (database, who calls): auth off, then auth on with an admin and with a read token of the data's project.
CONFIGS = [pytest.param((db, who), id=f"{db}-{who}", marks=[pytest.mark.postgres] if db == "postgresql" else [])
           for db in ("sqlite", "postgresql") for who in ("off", "admin", "read")]


@dataclass
class Live:
    client: httpx.Client  # bound to the service, with the caller's token when auth is on


@pytest.fixture(scope="module", params=CONFIGS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    kind, who = request.param
    with ExitStack() as stack:
        if kind == "sqlite":
            db = f"sqlite:///{tmp_path_factory.mktemp('st')}/st.db"
        else:
            db = stack.enter_context(pg_database())
        base = stack.enter_context(live_service(db, auth="off" if who == "off" else "on"))
        headers = {}
        if who != "off":
            seed = {"Authorization": f"Bearer {make_token(db, 'default', 'admin')}"}
            headers = seed if who == "admin" else {"Authorization": f"Bearer {make_token(db, 'default', who)}"}
        else:
            seed = {}
        with httpx.Client(base_url=base, headers=seed, timeout=30) as c:  # data, so reads have something to return
            assert post_steps(c, "0", batch(range(50))).status_code == 200
            assert post_steps(c, "run-1", batch(range(10))).status_code == 200
        client = stack.enter_context(httpx.Client(base_url=base, headers=headers, timeout=30))
        yield Live(client)


# The same document the live service serves at /openapi.json (building the app opens no database;
# the test below also checks the live one matches).
schema = schemathesis.openapi.from_dict(create_app(Settings(db="sqlite://")).openapi())


def test_live_schema_is_the_tested_one(live: Live) -> None:
    assert live.client.get("/openapi.json").json() == create_app(Settings(db="sqlite://")).openapi()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case, live: Live) -> None:  # type: ignore[no-untyped-def]
    kwargs = case.as_transport_kwargs(base_url=str(live.client.base_url))
    try:  # the client adds the caller's token
        response = live.client.request(
            kwargs["method"], kwargs["url"], headers=kwargs.get("headers"), params=kwargs.get("params"),
            content=kwargs.get("data"), json=kwargs.get("json"),
        )
    except httpx.RemoteProtocolError:  # uvicorn closes the connection after a 500
        raise AssertionError(f"{case.operation.label}: connection dropped (a 500?)") from None
    assert response.status_code < 500, (case.operation.label, response.status_code, response.text[:500])
    case.validate_response(
        response,
        # Not negative_data_rejection: it counts a repeated scalar query parameter (HTTP allows it, the
        # last one wins) or a lone value of a list parameter as schema-violating data accepted.
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
