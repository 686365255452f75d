"""A heartbeat thread, because `SimpleWorker` sends none while a job runs.

Every ``interval_s`` it (1) refreshes the worker's alive key (what /readyz and GET /models read:
name, host, queues, device, loaded bundles, current job) and (2) while a job runs, extends that
job's execution in RQ's StartedJobRegistry by ``ttl_s``. A worker killed with SIGKILL or by the
OOM killer stops beating, its execution expires after at most ``ttl_s`` and the watchdog
(`workers.watchdog`) retries or fails the job: it is never left "started".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rq.executions import Execution
from rq.job import Job

from workers.queueing import REDIS_OUTAGE, worker_alive_key

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(
        self,
        worker: Any,  # MammogenWorker; typed loosely to avoid an import cycle
        interval_s: float,
        ttl_s: int,
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        super().__init__(name="mammogen-heartbeat", daemon=True)
        self.worker = worker
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.describe = describe
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[Job, Execution] | None = None

    def track(self, job: Job, execution: Execution) -> None:
        with self._lock:
            self._current = (job, execution)
        self.beat()

    def untrack(self) -> None:
        with self._lock:
            self._current = None
        self.beat()

    def beat(self) -> None:
        with self._lock:
            current = self._current
            info = {**self.describe(), "current_job": current[0].id if current else None, "beat_at": time.time()}
            conn = self.worker.connection
            conn.set(worker_alive_key(self.worker.name), json.dumps(info), ex=self.ttl_s)
            if current is not None:
                self.worker.maintain_heartbeats(*current)

    def run(self) -> None:
        failing = False
        while not self._stop_event.wait(self.interval_s):
            try:
                self.beat()
                failing = False
            except REDIS_OUTAGE as exc:  # an outage must not kill the thread; the next beat retries
                if not failing:
                    log.warning("heartbeat: Redis unreachable (%s); beating on", type(exc).__name__)
                failing = True
            except Exception:
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self._stop_event.set()
        try:
            self.worker.connection.delete(worker_alive_key(self.worker.name))
        except Exception:
            log.debug("could not remove the alive key on stop", exc_info=True)
