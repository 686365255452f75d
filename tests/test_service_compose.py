"""docker-compose.yml is valid (per `docker-compose config`, which needs no engine) and describes the
deployment the service needs: Redis with AOF, a slim API, a GPU worker, shared result volume."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's package when it can)")
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


DOCKERFILES = {"api": ROOT / "docker/Dockerfile.api", "worker": ROOT / "docker/Dockerfile.worker"}


def _cmd(dockerfile: Path) -> list[str]:
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith("CMD [")]
    assert len(lines) == 1, f"{dockerfile.name}: one exec-form CMD expected"
    return json.loads(lines[0][len("CMD ") :])


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_each_image_installs_every_package_and_runs_a_real_cli_command(name):
    """No Docker engine here: what can be checked without one is that ``pip install .`` in the image
    sees every package pyproject.toml installs (demo bundles included) and that the image's command,
    and the compose file's, are commands this CLI accepts."""
    from app.cli.main import build_parser

    dockerfile = DOCKERFILES[name]
    text = dockerfile.read_text()
    assert "torch==2.13.0" in text and "pip install ." in text
    packages = {
        p.rstrip("*")
        for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
            "include"
        ]
    }
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    assert packages <= copied, f"{dockerfile.name} does not copy {sorted(packages - copied)}"
    ignored = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().split()
    for path in [*packages, "models/demo_bundles"]:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), f"{path} is excluded by the dockerignore"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for argv in (_cmd(dockerfile), compose["services"][name]["command"]):
        assert argv[0] == "mammogen"
        build_parser(argv[1]).parse_args(argv[1:])  # SystemExit (a failed test) for an unknown command or flag
    assert ("nvidia/cuda" in text) == (name == "worker")


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
