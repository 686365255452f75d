"""The OpenAPI document tells the truth: each route lists the statuses it answers, numeric bounds
match the server's checks, and ``Allow`` names every method of a resource. Real app, real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.service_support import purge_queue, settings_for, unique_queue

pytestmark = pytest.mark.integration


@pytest.fixture
def client(tmp_path, redis_conn, mambo_bundle) -> Iterator[TestClient]:
    queue = unique_queue("openapi")
    settings = settings_for(tmp_path, queue, mambo_bundle=mambo_bundle, api_key="k", max_image_side=4096)
    try:
        with TestClient(create_app(settings), headers={"X-API-Key": "k"}) as c:
            yield c
    finally:
        purge_queue(redis_conn, queue)


def _ops(schema: dict) -> dict[tuple[str, str], dict]:
    return {(path, m): op for path, item in schema["paths"].items() for m, op in item.items()}


def test_every_route_documents_the_refusals_it_can_answer(client):
    ops = _ops(client.get("/openapi.json").json())
    assert {"401", "404", "429", "503"} <= set(ops["/jobs/{job_id}", "get"]["responses"])
    assert {"401", "404", "503"} <= set(ops["/jobs/{job_id}", "delete"]["responses"])
    assert {"401", "404"} <= set(ops["/jobs/{job_id}/results/{name}", "get"]["responses"])
    for path in ("/super-resolve", "/anomaly-map", "/insert-lesion"):
        assert {"401", "413", "415", "422", "429", "503"} <= set(ops[path, "post"]["responses"])
    assert {"401", "413", "422", "429", "503"} <= set(ops["/generate", "post"]["responses"])
    assert "401" in ops["/models", "get"]["responses"] and "401" in ops["/metrics", "get"]["responses"]
    refusal = ops["/jobs/{job_id}", "get"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert refusal == {"$ref": "#/components/schemas/ErrorBody"}


def test_the_body_of_each_documented_refusal_matches_its_schema(client):
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "detail"}
    body = client.get("/jobs/nope").json()
    assert client.get("/jobs/nope").status_code == 404 and set(body) == {"error", "detail"}
    r = client.get("/models", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and set(r.json()) == {"error", "detail"}


def test_a_body_that_cannot_be_decoded_is_the_documented_422(client):
    """Bytes that are not JSON text (FastAPI's 400 "error parsing the body", found by schemathesis) and a
    broken multipart are bad input: 422 ErrorBody, as documented; other HTTP errors keep their status."""
    r = client.post("/generate", content=b"\xff\xfe\x1a", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "bad_input", r.text
    assert "the request body cannot be parsed" in r.json()["detail"]
    broken = client.post(
        "/insert-lesion", content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert broken.status_code == 422 and set(broken.json()) == {"error", "detail"}, broken.text
    assert client.get("/no-such-route").status_code == 404
    assert client.put("/generate", json={}).status_code == 405


def test_numeric_bounds_in_the_schema_are_the_servers(client):
    props = client.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]["properties"]
    height = next(b for b in props["height"]["anyOf"] if b.get("type") == "integer")
    assert (height["minimum"], height["maximum"]) == (32, 4096)  # max_image_side of this server
    steps = next(b for b in props["steps"]["anyOf"] if b.get("type") == "integer")
    assert (steps["minimum"], steps["maximum"]) == (1, 1000) and props["steps"].get("default") is None
    assert "job kind's default" in props["steps"]["description"]
    assert props["eta"]["minimum"] == 0 and props["eta"]["maximum"] == 1
    body = {"height": 4096, "width": 32, "steps": 1}
    assert client.post("/generate", json={**body, "height": 4097}).status_code == 413
    assert client.post("/generate", json={**body, "steps": 1001}).status_code == 422
    assert client.post("/generate", json={**body, "steps": 0}).status_code == 422


def test_lesion_fields_are_in_the_schema_under_their_api_names(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    generate = schemas["GenerateRequest"]["properties"]
    assert {"class", "lesions", "guidance_scale"} <= set(generate) and "label" not in generate
    assert generate["guidance_scale"]["minimum"] == 0 and generate["guidance_scale"]["maximum"] == 20
    assert set(schemas["LesionIn"]["required"]) == {"kind", "center", "diameter_px"}
    assert "lesions" in schemas["InsertLesionParams"]["required"]
    r = client.post("/generate", json={"height": 96, "width": 96, "steps": 1, "label": "mass"})
    assert r.status_code == 422 and "label" in r.text  # the API field is 'class'


def test_allow_lists_every_method_of_the_job_resource(client):
    r = client.options("/jobs/abc")
    assert r.status_code == 204 and r.headers["allow"] == "DELETE, GET, OPTIONS"
    r = client.put("/jobs/abc")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, OPTIONS"
    assert client.options("/generate").headers["allow"] == "OPTIONS, POST"
    assert client.options("/no-such-path").status_code == 404
