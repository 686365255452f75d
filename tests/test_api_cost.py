"""Admission by cost: a job whose estimated evaluations exceed the per-request limit, or whose
estimated run exceeds the job timeout, is refused with a 4xx naming the limit and the estimate;
the queued ETA is computed from the same estimate."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from app.api.schemas import GenerateRequest
from app.main import create_app
from models.options import SamplingOptions
from models.requests import AnomalyConfig
from tests.service_support import purge_queue, settings_for, unique_queue
from workers.estimates import DEFAULT_SECONDS_PER_WORK, job_cost
from workers.job_requests import AnomalyMapJob, GenerateJob, StoredUpload
from workers.queueing import SERIALIZER

pytestmark = pytest.mark.integration

GEOMETRY = {"s": 32, "k": 3, "overlap": 8}  # the test bundle's


@pytest.fixture
def make_client(tmp_path, redis_conn, mambo_bundle, dualview_bundle):
    queues = []

    def make(**overrides) -> TestClient:
        queue = unique_queue("cost")
        queues.append(queue)
        settings = settings_for(
            tmp_path, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle, **overrides
        )
        return TestClient(create_app(settings))

    yield make
    for q in queues:
        purge_queue(redis_conn, q)


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def _job(body: dict) -> GenerateJob:
    """The typed job the API queues for a /generate body."""
    return GenerateRequest(**body).job()


def _numbers(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text)]


def test_the_six_hour_request_is_refused_naming_the_limit_and_its_estimate(client):
    body = {"model": "mambo", "height": 8192, "width": 8192, "steps": 1000, "count": 16}
    r = client.post("/generate", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "over_cost_limit"
    expected = job_cost(_job(body), GEOMETRY)
    assert "MAMMOGEN_MAX_JOB_EVALUATIONS" in err["detail"]
    assert round(expected.work) in _numbers(err["detail"]) and 250_000 in _numbers(err["detail"])
    assert Queue(client.app.state.settings.queue_name, connection=client.app.state.service.connection).count == 0


def test_the_limit_is_a_setting(make_client):
    body = {"model": "mambo", "height": 512, "width": 512, "steps": 50}
    work = job_cost(_job(body), GEOMETRY).work
    with make_client(max_job_evaluations=int(work) - 1) as c:
        assert c.post("/generate", json=body).status_code == 422
    with make_client(max_job_evaluations=int(work) + 1) as c:
        assert c.post("/generate", json=body).status_code == 202


def test_a_job_that_would_outlive_its_timeout_is_refused_naming_both(make_client):
    body = {"model": "mambo", "height": 512, "width": 512, "steps": 200}
    seconds = job_cost(_job(body), GEOMETRY).work * DEFAULT_SECONDS_PER_WORK
    assert seconds + 120 > 300  # no finished job yet: the slowest-device default applies
    with make_client(job_timeout_s=300) as c:
        r = c.post("/generate", json=body)
        assert r.status_code == 422
        assert "timeout of 300 s" in r.json()["detail"] and "MAMMOGEN_JOB_TIMEOUT_S" in r.json()["detail"]
        assert c.post("/generate", json={**body, "steps": 5}).status_code == 202


def test_queued_etas_come_from_the_same_estimate(client):
    a = {"model": "mambo", "height": 96, "width": 64, "steps": 4}
    b = {"model": "dualview", "steps": 7, "count": 2}
    work_a = job_cost(_job(a), GEOMETRY).work
    work_b = job_cost(_job(b), {}).work
    first = client.post("/generate", json=a).json()["id"]
    second = client.post("/generate", json=b).json()["id"]
    conn = client.app.state.service.connection
    assert Job.fetch(first, connection=conn, serializer=SERIALIZER).meta["estimate"]["work"] == round(work_a, 3)
    assert client.get(f"/jobs/{first}").json()["progress"]["eta_s"] == pytest.approx(
        DEFAULT_SECONDS_PER_WORK * work_a, abs=0.1
    )
    assert client.get(f"/jobs/{second}").json()["progress"]["eta_s"] == pytest.approx(
        DEFAULT_SECONDS_PER_WORK * (work_a + work_b), abs=0.1
    )


def test_upload_cost_uses_the_measured_breast_share():
    """Patches outside the breast are skipped: a smaller breast means fewer evaluations."""

    def anomaly(resolution: str) -> AnomalyMapJob:
        config = AnomalyConfig(lam=700, resolution=resolution, options=SamplingOptions(steps=10, seeds=(0,)))
        return AnomalyMapJob(request=config, upload=StoredUpload("input.png", "png", 1024, 1024, ""))

    big = job_cost(anomaly("full"), GEOMETRY, breast_fraction=0.8)
    small = job_cost(anomaly("full"), GEOMETRY, breast_fraction=0.2)
    assert small.evaluations < big.evaluations
    assert job_cost(anomaly("global"), GEOMETRY).evaluations == 7  # 10 x 0.7
