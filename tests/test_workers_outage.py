"""A Redis outage in the middle of a job: the worker keeps its process and its loaded bundles,
reconnects with backoff, and the job finishes without losing a retry.

Uses a private redis-server (AOF on, its own port and directory), stopped and restarted by the
test; the shared Redis at 6379 is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from tests.service_support import WorkerProcess, free_port, missing, settings_for, unique_queue, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEARTBEAT_S = 1
OUTAGE_S = 8  # longer than the 3 s heartbeat expiry: the job's execution looks abandoned afterwards


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        conn = Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(conn.ping())
            except Exception:
                return False

        wait_for(answers, 20, what="the private redis-server")
        conn.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the AOF is flushed, as in an orderly restart
            self.proc.wait(20)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        missing("redis-server not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_worker_rides_out_a_redis_outage_without_reloading_or_burning_a_retry(tmp_path, redis_server, dualview_bundle):
    settings = settings_for(
        tmp_path,
        unique_queue("outage"),
        redis_url=redis_server.url,
        dualview_bundle=dualview_bundle,
        heartbeat_s=HEARTBEAT_S,
        job_retries=1,
    )
    conn = Redis.from_url(redis_server.url)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_alive(conn)
        with TestClient(create_app(settings)) as client:
            location = client.post("/generate", json={"model": "dualview", "steps": 1000, "sampler": "ddpm"}).headers[
                "Location"
            ]
            wait_for(
                lambda: (j := client.get(location).json())["status"] == "running" and (j["progress"]["step"] or 0) > 0,
                120,
                what="the job to be running",
            )
            redis_server.stop()
            time.sleep(OUTAGE_S)
            assert worker.proc.poll() is None, f"the worker exited during the outage:\n{worker.log()}"
            redis_server.start()
            info = wait_for(
                lambda: (j := client.get(location).json())["status"] in ("succeeded", "failed", "cancelled") and j,
                240,
                interval=0.5,
                what="the job to end",
            )
        log = worker.log()
        assert info["status"] == "succeeded", f"{info}\n{log}"
        assert info["retries_left"] == 1, info  # the outage was not the job's fault
        assert worker.proc.poll() is None, log
        full_log = (tmp_path / "worker.log").read_text()
        loads = [line for line in full_log.splitlines() if "loaded dualview bundle" in line]
        assert len(loads) == 1, log  # bundles loaded once, kept through the outage
        runs = [line for line in full_log.splitlines() if "Successfully completed" in line]
        assert len(runs) == 1, log  # run once: nobody took the running job for abandoned after the outage
        meta = Redis.from_url(redis_server.url).hget(f"rq:job:{info['id']}", "meta") or b""
        assert b"worker_lost" not in meta
    finally:
        worker.stop()
        conn.close()
