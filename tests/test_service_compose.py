"""docker-compose.yml is valid (per `docker-compose config`, which needs no engine) and describes the
deployment the service needs: Redis with AOF, a slim API, a GPU worker, shared result volume."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (CI installs Debian's package)")
    res = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_redis_persists_with_aof(compose):
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(v["target"] == "/data" for v in _volumes(redis))


def test_worker_reserves_a_gpu_and_shares_results_with_the_api(compose):
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    results = {v["source"] for v in _volumes(api) if v["target"] == "/results"}
    assert results and results == {v["source"] for v in _volumes(worker) if v["target"] == "/results"}
    assert any(v["target"] == "/bundles" and v.get("read_only") for v in _volumes(worker))
    for svc in (api, worker):
        assert svc["environment"]["MAMMOGEN_REDIS_URL"] == "redis://redis:6379/0"
        assert svc["environment"]["MAMMOGEN_RESULT_DIR"] == "/results"
    assert "--api-only" in api["command"]


def test_dockerfiles_exist_and_run_the_cli(compose):
    for name in ("api", "worker"):
        dockerfile = ROOT / compose["services"][name]["build"]["dockerfile"]
        text = dockerfile.read_text()
        assert "torch==2.13.0" in text and "pip install ." in text
    assert "nvidia/cuda" in (ROOT / "docker/Dockerfile.worker").read_text()


def _volumes(service: dict) -> list[dict]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            target, _, mode = rest.partition(":")
            out.append({"source": src, "target": target, "read_only": mode == "ro"})
        else:
            out.append(v)
    return out
