"""Waiting for a job to change without holding a thread: one watcher per API process.

A long-poll (``GET /jobs/{id}?wait=``) or a stream parks a coroutine here, never a worker thread,
so any number of waits leave the thread pool to probes and submissions. One asyncio task reads
the state of every watched job in a single Redis round trip every ``interval_s`` and wakes the
waiters whose job changed; with nothing watched it sends nothing. Waiters are bounded in all and
per client (API key, else address): past a bound the request is refused with 429, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from rq.job import Job

from models.errors import TooManyWaitersError
from workers.queueing import cancel_key

log = logging.getLogger(__name__)

#: RQ statuses after which a job never changes again (a failed job with retries left is requeued instead).
FINAL_RQ_STATUSES = frozenset({"finished", "failed", "stopped", "canceled"})
#: The job-hash fields whose change a waiter sees (not ``last_heartbeat``: it changes every beat).
_FIELDS = ("status", "meta", "started_at", "ended_at", "retries_left")


@dataclass(frozen=True)
class JobVersion:
    """What a waiter compares: the RQ status (None: the job is gone) and a digest of the rest."""

    status: str | None
    digest: str

    @property
    def final(self) -> bool:
        return self.status is None or self.status in FINAL_RQ_STATUSES


@dataclass
class _Watched:
    version: JobVersion | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


class JobWatcher:
    def __init__(
        self,
        connection: AsyncRedis,
        *,
        interval_s: float = 0.2,
        max_waiters: int = 1000,
        max_waiters_per_client: int = 100,
    ) -> None:
        self.connection = connection
        self.interval_s = interval_s
        self.max_waiters = max_waiters
        self.max_waiters_per_client = max_waiters_per_client
        self._jobs: dict[str, _Watched] = {}
        self._clients: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Waiters admitted right now (the ``mammogen_waiters`` gauge)."""
        return sum(self._clients.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mammogen-job-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.connection.aclose()

    @contextlib.asynccontextmanager
    async def admitted(self, client: str) -> AsyncIterator[None]:
        """Hold one waiter slot of ``client`` for the duration; TooManyWaitersError when none is left."""
        if self._clients[client] >= self.max_waiters_per_client:
            raise TooManyWaitersError(
                f"this client already has {self._clients[client]} waiting requests, the most allowed "
                f"(max_waiters_per_client = {self.max_waiters_per_client}); poll without wait or retry later"
            )
        if self.waiting >= self.max_waiters:
            raise TooManyWaitersError(f"the server already holds {self.max_waiters} waiting requests; retry later")
        self._clients[client] += 1
        try:
            yield
        finally:
            self._clients[client] -= 1
            if self._clients[client] <= 0:
                del self._clients[client]

    async def version(self, job_id: str) -> JobVersion:
        """The job's version now (one Redis round trip)."""
        return (await self._read([job_id]))[job_id]

    async def next_change(self, job_id: str, since: JobVersion | None, timeout_s: float) -> JobVersion | None:
        """Wait until the job's version differs from ``since``; None when ``timeout_s`` passes first."""
        entry = self._jobs.setdefault(job_id, _Watched())
        entry.waiters += 1
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                if entry.version is not None and entry.version != since:
                    return entry.version
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.changed.wait(), remaining)
        finally:
            entry.waiters -= 1
            if entry.waiters == 0:
                self._jobs.pop(job_id, None)

    async def _read(self, job_ids: list[str]) -> dict[str, JobVersion]:
        async with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(Job.key_for(job_id), _FIELDS)
                pipe.exists(cancel_key(job_id))
            replies = await pipe.execute()
        out = {}
        for i, job_id in enumerate(job_ids):
            values, cancelled = replies[2 * i], replies[2 * i + 1]
            status = values[0].decode() if values[0] else None
            h = hashlib.blake2b(digest_size=12)
            for v in values:
                h.update(v or b"\0")
            h.update(b"1" if cancelled else b"0")
            out[job_id] = JobVersion(status, h.hexdigest())
        return out

    async def _run(self) -> None:
        failing = False
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            job_ids = list(self._jobs)
            try:
                versions = await self._read(job_ids)
                if failing:
                    log.info("job watcher: Redis answers again")
                failing = False
            except (RedisError, OSError) as exc:  # waiters time out and answer 503 themselves
                if not failing:
                    log.warning("job watcher: Redis unreachable (%s); retrying", type(exc).__name__)
                failing = True
                versions = {}
            for job_id, version in versions.items():
                entry = self._jobs.get(job_id)
                if entry is not None and entry.version != version:
                    entry.version = version
                    entry.changed.set()
                    entry.changed = asyncio.Event()  # the next change needs a fresh event
            await asyncio.sleep(self.interval_s)
