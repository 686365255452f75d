"""Shared pieces of the service tests: the real Redis (a dedicated DB, a unique queue per test),
tiny random-weight bundles, worker subprocesses, a live uvicorn server, polling helpers.

Nothing here fakes Redis, RQ or a pipeline: workers are real `mammogen worker` processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
from redis import Redis

from app.settings import Settings
from workers.queueing import KEY_PREFIX, SERIALIZER, worker_alive_key

REDIS_URL = "redis://127.0.0.1:6379/13"
ROOT = Path(__file__).resolve().parent.parent


def missing(message: str) -> NoReturn:
    """Something a test needs is not here: skip on a developer machine, FAIL under CI (``CI`` set, as
    ``.ci/run`` does), so a CI run never passes by skipping what it was meant to test."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (required under CI)")
    pytest.skip(message)


def redis_or_skip() -> Redis:
    conn = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        conn.ping()
    except Exception as exc:
        missing(f"no Redis at {REDIS_URL}: {exc}")
    return conn


def unique_queue(tag: str = "t") -> str:
    return f"mgtest-{tag}-{uuid.uuid4().hex[:10]}"


def purge_queue(conn: Redis, name: str) -> None:
    """Delete every key of one test queue and its jobs (never FLUSHDB: the DB may be shared)."""
    from rq import Queue
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        StartedJobRegistry,
    )

    q = Queue(name, connection=conn, serializer=SERIALIZER)
    ids = set(q.get_job_ids())
    for reg in (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry, CanceledJobRegistry, DeferredJobRegistry):
        ids.update(reg(name, connection=conn, serializer=SERIALIZER).get_job_ids(cleanup=False))
    for job_id in ids:
        for key in conn.scan_iter(match=f"*{job_id}*"):
            conn.delete(key)
    for key in conn.scan_iter(match=f"*{name}*"):
        conn.delete(key)
    for key in conn.scan_iter(match=f"{KEY_PREFIX}:worker:*"):
        raw = conn.get(key)
        if raw and name.encode() in raw:
            conn.delete(key)


def dualview_job(steps: int = 1, seed: int = 0, formats: tuple[str, ...] = ("png16",)) -> Any:
    """A typed generate job for one dual-view pair (what POST /generate queues)."""
    from models.options import SamplingOptions
    from models.requests import GenerationRequest
    from workers.job_requests import GenerateJob

    return GenerateJob(GenerationRequest("dualview", options=SamplingOptions(steps=steps, seeds=(seed,))), formats)


def make_dualview_bundle(path: Path, size: int = 32) -> Path:
    import torch

    from models.bundle import save_bundle
    from models.intensity import DEFAULT_INTENSITY
    from models.schedulers import NOISE_SCHEDULE
    from models.unet import build_unet

    torch.manual_seed(0)
    return save_bundle(
        path,
        kind="dualview",
        name="test-dualview",
        version="0.0.1",
        networks={"dualview": build_unet("tiny", 3, 3, sample_size=size)},
        geometry={"chest_wall": "left"},
        intensity=DEFAULT_INTENSITY,
        schedule=NOISE_SCHEDULE,
        training={"data": "none (random weights, service tests)"},
        random_weights=True,
    )


def make_mambo_bundle(path: Path, s: int = 32) -> Path:
    from models.bundle import save_bundle
    from models.intensity import DEFAULT_INTENSITY
    from models.mambo import random_mambo_networks
    from models.schedulers import NOISE_SCHEDULE

    return save_bundle(
        path,
        kind="mambo",
        name="test-mambo",
        version="0.0.1",
        networks=random_mambo_networks("tiny", s),
        geometry={"s": s, "k": 3, "overlap": 8},
        intensity=DEFAULT_INTENSITY,
        schedule=NOISE_SCHEDULE,
        training={"data": "none (random weights, service tests)"},
        random_weights=True,
    )


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `mammogen worker` subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGEN_")}
    env.update(
        MAMMOGEN_REDIS_URL=str(settings.redis_url),
        MAMMOGEN_QUEUE_NAME=settings.queue_name,
        MAMMOGEN_RESULT_DIR=str(settings.result_dir),
        MAMMOGEN_HEARTBEAT_S=str(settings.heartbeat_s),
        MAMMOGEN_DEVICE="cpu",
        MAMMOGEN_JOB_RETRIES=str(settings.job_retries),
        MAMMOGEN_ACCELERATION=settings.acceleration,
        MAMMOGEN_WARMUP_MAX_BATCH=str(settings.warmup_max_batch),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    if settings.pacs:
        env["MAMMOGEN_PACS"] = json.dumps(
            {
                name: {
                    **server.model_dump(mode="json", exclude={"password"}),
                    **({"password": server.password.get_secret_value()} if getattr(server, "password", None) else {}),
                }
                for name, server in settings.pacs.items()
            }
        )
        env.update(
            MAMMOGEN_DELIVERY_ATTEMPTS=str(settings.delivery_attempts),
            MAMMOGEN_DELIVERY_BACKOFF_S=str(settings.delivery_backoff_s),
            MAMMOGEN_DELIVERY_BACKOFF_MAX_S=str(settings.delivery_backoff_max_s),
        )
    for kind in ("mambo", "dualview"):
        path = getattr(settings, f"{kind}_bundle")
        if path is not None:
            env[f"MAMMOGEN_{kind.upper()}_BUNDLE"] = str(path)
    return env


class WorkerProcess:
    """A real `mammogen worker` subprocess; its log goes to a file for failure messages."""

    def __init__(self, settings: Settings, log_path: Path, name: str | None = None) -> None:
        self.name = name or f"w-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        self.settings = settings
        cmd = [
            sys.executable,
            "-c",
            f"from app.cli import main; raise SystemExit(main(['worker', '--name', '{self.name}']))",
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, env=service_env(settings), stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def wait_alive(self, conn: Redis, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.exists(worker_alive_key(self.name)):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.2)
        raise AssertionError(f"worker not alive after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def settings_for(tmp: Path, queue: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "queue_name": queue,
        "result_dir": tmp / "results",
        "heartbeat_s": 1,
        "device": "cpu",
    }
    base.update(overrides)
    return Settings(**base)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def black_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit black PNG, written without Pillow: ``rows`` rows of data (default all), so a header may
    claim any size. All rows at 8000 x 8000 is the 7.8 KB decompression bomb of issue 13."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = zlib.compress(b"\0" * ((width + 7) // 8 + 1) * (height if rows is None else rows), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server in a thread (for concurrent clients); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", limit_concurrency=1000)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, what="uvicorn start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def dualview_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dualview_bundle(tmp_path_factory.mktemp("bundles") / "dualview")


@pytest.fixture(scope="session")
def mambo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mambo_bundle(tmp_path_factory.mktemp("bundles") / "mambo")


@pytest.fixture
def redis_conn() -> Iterator[Redis]:
    conn = redis_or_skip()
    yield conn
    conn.close()
