"""One wire contract (issue 15): what the client's checks accept the service stores (2xx), and what the
service refuses the client's checks refuse too. Inputs come from hypothesis, near the rules' edges."""

from __future__ import annotations

import json
import math
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sapo_monitor.client import wire

from .conftest import BOTH

_ID_CHARS = "aZ09._-:~ /\x00é"
run_ids = st.one_of(
    st.text(alphabet=_ID_CHARS, min_size=1, max_size=8),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,6}\Z"),
    st.integers(195, 205).map(lambda n: "r" * n),
)
names = st.one_of(
    st.text(alphabet="az09._-A \x00", min_size=0, max_size=6),
    st.sampled_from(["loss", "ratio.mean", "my.own_metric", "train/loss"]),
    st.integers(199, 201).map(lambda n: "m" * n),
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**310), 10**310),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", True, None]),
)
steps = st.one_of(st.integers(0, 2**62 + 5), st.integers(-3, -1))
_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _client_accepts(doc: dict) -> bool:
    try:
        wire.decode_steps(doc, now=1.0, known_names=None)
    except wire.WireError:
        return False
    return True


@BOTH
@_SETTINGS
@given(run_id=run_ids)
def test_run_ids_the_client_takes_are_the_ones_the_service_takes(service: httpx.Client, run_id: str) -> None:
    r = service.put(f"/api/v1/runs/{quote(run_id, safe='')}", json={"name": "x"})
    assert r.status_code < 500, r.text
    assert (r.status_code == 200) == wire.is_run_id(run_id), (run_id, r.status_code, r.text)


@BOTH
@_SETTINGS
@given(step=steps, name=names, value=values)
def test_steps_the_client_takes_are_the_ones_the_service_takes(service: httpx.Client, step: int, name: str,
                                                               value: object) -> None:
    doc = {"schema": 1, "steps": [{"step": step, "metrics": {name: value}}]}
    raw = json.dumps(doc, allow_nan=True)  # bare NaN tokens too: the service accepts them as Python writes them
    r = service.post("/api/v1/runs/contract/steps", content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert (r.status_code == 200) == _client_accepts(json.loads(raw)), (doc, r.status_code, r.text)


@BOTH
@_SETTINGS
@given(metrics=st.dictionaries(st.from_regex(r"\A[a-z0-9_.]{1,12}\Z"), st.floats(), max_size=8))
def test_what_the_client_encodes_is_stored_and_read_back(service: httpx.Client, metrics: dict[str, float]) -> None:
    body = wire.encode_batch([wire.StepRecord(3, 1.7e9, metrics)], compress=True)
    r = service.post("/api/v1/runs/enc/steps", content=body,
                     headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    if metrics:
        got = service.get("/api/v1/runs/enc/series", params={"metric": sorted(metrics)}).json()["series"]
        for k, v in metrics.items():
            back = wire.decode_float(got[k]["value"][-1])
            assert back == v or (math.isnan(v) and math.isnan(back))


def test_the_published_value_types_are_the_wires_encoding() -> None:
    # The response models spell the non-finite strings as a Literal (a type checker needs them written
    # out); they must be the wire's, and the ingest body's schema is the wire's fragment itself.
    import typing

    from sapo_monitor.service.api import schemas
    from sapo_monitor.service.app import create_app
    from sapo_monitor.service.settings import Settings

    literal = next(a for a in typing.get_args(schemas.Value) if typing.get_origin(a) is typing.Literal)
    assert typing.get_args(literal) == wire.NONFINITE_STRINGS
    doc = create_app(Settings(db="sqlite://")).openapi()
    body = doc["paths"]["/api/v1/runs/{run_id}/steps"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == wire.STEP_BATCH_SCHEMA
