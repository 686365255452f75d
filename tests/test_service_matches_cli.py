"""The service runs what the CLI runs: the same request gives the same pixels through HTTP + queue + worker
as through ``mammogen generate / super-resolve / anomaly-map`` (real Redis, a real in-process worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from rq import Queue

from app.cli.main import main
from app.main import create_app
from models.imaging.files import write_png16
from tests.service_support import purge_queue, settings_for, unique_queue
from training.phantoms import make_phantom_case
from workers.queueing import SERIALIZER
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.worker import MammogenWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path, redis_conn, mambo_bundle):
    """(HTTP client, run-the-queue function, result store) of one service with the MAMBO test bundle."""
    name = unique_queue("same")
    settings = settings_for(tmp_path, name, mambo_bundle=mambo_bundle)
    store = ResultStore(settings.result_dir)
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)

    def run_queue() -> None:
        runtime = WorkerRuntime(store, {"mambo": mambo_bundle}, device="cpu")  # the settings' defaults, as the CLI
        assert MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1).work(burst=True)

    try:
        with TestClient(create_app(settings)) as client:
            yield client, run_queue, store
    finally:
        purge_queue(redis_conn, name)


def _result(client: TestClient, store: ResultStore, location: str, name: str) -> Path:
    info = client.get(location).json()
    assert info["status"] == "succeeded", info
    return store.path_of(info["id"], name)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def right_breast_png(tmp_path_factory) -> Path:
    image = make_phantom_case(17, (48, 36), laterality="R").cc.image
    return write_png16(tmp_path_factory.mktemp("input") / "right.png", image)


def test_generate_gives_the_cli_images_pixel_for_pixel(service, mambo_bundle, tmp_path):
    client, run_queue, store = service
    request = {"model": "mambo", "height": 96, "width": 128, "count": 2, "seed": 5, "steps": 2, "laterality": "R"}
    r = client.post("/generate", json={**request, "sampler": "ddpm", "stitching": "fused", "formats": ["npy"]})
    assert r.status_code == 202, r.text
    run_queue()
    argv = ["generate", "--bundle", str(mambo_bundle), "--height", "96", "--width", "128", "--count", "2"]
    argv += ["--seed", "5", "--steps", "2", "--sampler", "ddpm", "--stitching", "fused"]  # all seeds in lock-step
    assert main([*argv, "--chest-wall", "right", "--format", "npy", "--out", str(tmp_path / "cli")]) == 0
    for i, seed in enumerate((5, 6)):
        served = np.load(_result(client, store, r.headers["Location"], f"image{i:02d}.npy"))
        made = np.load(tmp_path / "cli" / f"mambo_seed{seed}.npy")
        assert served.shape == (96, 128)
        np.testing.assert_array_equal(served, made)
    assert not np.array_equal(
        np.load(tmp_path / "cli" / "mambo_seed5.npy"), np.load(tmp_path / "cli" / "mambo_seed6.npy")
    )


def test_super_resolution_gives_the_cli_image_pixel_for_pixel(service, mambo_bundle, right_breast_png, tmp_path):
    client, run_queue, store = service
    files = {"file": ("right.png", right_breast_png.read_bytes(), "image/png")}
    r = client.post("/super-resolve", files=files, data={"scale": "2", "steps": "2", "seed": "3"})
    assert r.status_code == 202, r.text
    run_queue()
    argv = ["super-resolve", str(right_breast_png), "--scale", "2", "--steps", "2", "--seed", "3"]
    assert main([*argv, "--bundle", str(mambo_bundle), "--out", str(tmp_path / "cli")]) == 0
    served = _png(_result(client, store, r.headers["Location"], "superres.png"))
    assert served.shape == (96, 72)
    np.testing.assert_array_equal(served, _png(tmp_path / "cli" / "superres.png"))


def test_anomaly_map_gives_the_cli_heat_map_pixel_for_pixel(service, mambo_bundle, right_breast_png, tmp_path):
    client, run_queue, store = service
    files = {"file": ("right.png", right_breast_png.read_bytes(), "image/png")}
    form = {"timestep": "3", "repeats": "2", "seed": "4", "sampler": "ddpm", "steps": "1000", "formats": ["npy"]}
    r = client.post("/anomaly-map", files=files, data=form)
    assert r.status_code == 202, r.text
    run_queue()
    argv = ["anomaly-map", str(right_breast_png), "--lambda", "3", "--seeds", "2", "--seed", "4"]
    argv += ["--sampler", "ddpm", "--steps", "1000", "--bundle", str(mambo_bundle), "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    served = np.load(_result(client, store, r.headers["Location"], "heatmap.npy"))
    assert served.shape == (48, 36) and served.max() > 0
    np.testing.assert_array_equal(served, np.load(tmp_path / "cli" / "heatmap.npy"))
    recon = _png(_result(client, store, r.headers["Location"], "reconstruction.png"))
    np.testing.assert_array_equal(recon, _png(tmp_path / "cli" / "reconstruction.png"))
