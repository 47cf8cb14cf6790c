"""schemathesis against the live service's OpenAPI: no 5xx and no response that breaks the schema.

The CLI (``st run``) cannot send requests in this environment (``urllib3-future`` shadows urllib3 and
breaks ``requests``), so the same checks run through the Python API, with requests sent over real HTTP
by httpx to the service running under uvicorn. Examples per operation are bounded to keep it short.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import live_service
from .util import batch, post_steps

MAX_EXAMPLES = 10


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = f"sqlite:///{tmp_path_factory.mktemp('st')}/st.db"
    with live_service(db) as base:
        with httpx.Client(base_url=base) as c:  # some data, so reads have something to return
            post_steps(c, "0", batch(range(50)))
            post_steps(c, "run-1", batch(range(10)))
        yield base


# The same document the live service serves at /openapi.json (building the app opens no database;
# the test below also checks the live one matches).
schema = schemathesis.openapi.from_dict(create_app(Settings(db="sqlite://")).openapi())


def test_live_schema_is_the_tested_one(live: str) -> None:
    assert httpx.get(live + "/openapi.json").json() == create_app(Settings(db="sqlite://")).openapi()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case, live: str) -> None:  # type: ignore[no-untyped-def]
    kwargs = case.as_transport_kwargs(base_url=live)
    response = httpx.request(
        kwargs["method"], kwargs["url"], headers=kwargs.get("headers"), params=kwargs.get("params"),
        content=kwargs.get("data"), json=kwargs.get("json"), timeout=30,
    )
    assert response.status_code < 500, response.text
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance,
                negative_data_rejection],
    )
