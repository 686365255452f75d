"""Probes and the OpenAPI document, without a worker (and, for /readyz, without a reachable Redis)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.options import SamplingOptions
from models.requests import GenerationRequest, SuperResConfig
from workers.estimates import job_cost, job_timeout_s
from workers.job_requests import GenerateJob, StoredUpload, SuperResolveJob


def test_readyz_is_503_naming_redis_when_redis_is_unreachable(tmp_path):
    settings = Settings(redis_url="redis://127.0.0.1:1/0", result_dir=tmp_path, queue_name="nowhere")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {
            "status": "ok",
            "redis": None,
            "workers": None,
            "queue": None,
            "detail": None,
        }
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["redis"] is False and "Redis" in r.json()["detail"]
        assert "mammogen_redis_up" in client.get("/metrics").text
        r = client.post("/generate", json={"model": "dualview", "steps": 2})
        assert r.status_code == 503 and r.json()["error"] == "queue_unavailable"
        assert client.get("/jobs/abc").status_code == 503


def test_openapi_documents_every_endpoint_with_examples(tmp_path):
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", result_dir=tmp_path))
    spec = app.openapi()
    assert set(spec["paths"]) == {
        "/generate",
        "/super-resolve",
        "/anomaly-map",
        "/insert-lesion",
        "/jobs/{job_id}",
        "/jobs/{job_id}/events",
        "/jobs/{job_id}/results/{name}",
        "/jobs/{job_id}/results/{name}/preview",
        "/models",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert spec["components"]["schemas"]["GenerateRequest"]["examples"]
    assert {"202", "413", "415", "429", "503"} <= set(spec["paths"]["/super-resolve"]["post"]["responses"])
    assert spec["paths"]["/generate"]["post"]["operationId"] == "generate"
    assert {"202", "413", "415", "429", "503"} <= set(spec["paths"]["/insert-lesion"]["post"]["responses"])


def _generate(height: int, width: int, steps: int) -> GenerateJob:
    return GenerateJob(GenerationRequest("mambo", height, width, options=SamplingOptions(steps=steps)))


def _superres(scale: int, height: int, width: int) -> SuperResolveJob:
    upload = StoredUpload("input.png", "png", height, width, "")
    return SuperResolveJob(request=SuperResConfig(scale, options=SamplingOptions(steps=50)), upload=upload)


def test_job_timeouts_grow_with_the_work_and_stay_under_the_cap():
    def timeout(job: GenerateJob | SuperResolveJob, cap: int = 10**6, geometry: dict | None = None) -> int:
        return job_timeout_s(job_cost(job, geometry), cap)

    small = timeout(_generate(512, 512, 10))
    large = timeout(_generate(3840, 3072, 50))
    assert 120 < small < large
    assert timeout(_generate(8192, 8192, 1000), 3600) == 3600
    # finer tiles (a demo bundle's s = 64) mean more, cheaper evaluations: 768 x 576 at 50 steps measured
    # ~740 s on 2 busy CPU cores; the timeout leaves headroom over that
    demo = timeout(_generate(768, 576, 50), 10**6, {"s": 64, "overlap": 8})
    assert 2 * 740 < demo < 4 * 3600
    assert timeout(_superres(16, 256, 192)) > timeout(_superres(2, 256, 192))
