"""Redis connection, queue construction and the Redis key names the service shares.

Every process (API, workers, tests) builds its queues here, so all of them agree on the JSON
serializer (pickle from Redis is unsafe and ties jobs to Python internals) and on key names.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.serializers import JSONSerializer

KEY_PREFIX = "mammogen"
#: Where API and workers look when no URL is configured (a local Redis, as on the development machines).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SERIALIZER = JSONSerializer

#: The job functions by kind; the queue knows only these importable names, never the models.
JOB_FUNCTIONS: dict[str, str] = {
    "generate": "workers.jobs.generate",
    "super-resolve": "workers.jobs.super_resolve",
    "anomaly-map": "workers.jobs.anomaly_map",
    "insert-lesion": "workers.jobs.insert_lesion",
}


def connect(url: str) -> Redis:
    """A Redis client with short socket timeouts so a dead server fails fast instead of hanging."""
    return Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30)


#: What an unreachable or hung Redis raises: an outage, not a fault of the job or the request.
REDIS_OUTAGE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)


def wait_for_redis(connection: Redis, log: logging.Logger, why: str = "", max_delay_s: float = 5.0) -> float:
    """Block until Redis answers, retrying with backoff (0.5 s doubling to ``max_delay_s``); one warning
    per outage instead of a traceback per attempt. Returns the seconds waited."""
    t0, delay, warned = time.monotonic(), 0.5, False
    while True:
        try:
            connection.ping()
        except REDIS_OUTAGE as exc:
            if not warned:
                log.warning("Redis unreachable (%s); retrying with backoff%s", type(exc).__name__, why)
                warned = True
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)
            continue
        waited = time.monotonic() - t0
        if warned:
            log.warning("Redis answers again after %.1f s", waited)
        return waited


def connect_async(url: str) -> AsyncRedis:
    """The asyncio client of the same server, for waits that must not hold a thread (API only)."""
    return AsyncRedis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30)


def make_queue(connection: Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER)


#: Job priorities, in the order workers drain their queues: a high job waits only for high ones.
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")


def priority_queue_name(base: str, priority: str) -> str:
    """The RQ queue of one priority; normal jobs keep the base name (what every older process uses)."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}")
    return base if priority == "normal" else f"{base}-{priority}"


def base_queue_name(queue_name: str, priority: str) -> str:
    """The base name of a priority queue (inverse of `priority_queue_name`)."""
    suffix = "" if priority == "normal" else f"-{priority}"
    return queue_name[: len(queue_name) - len(suffix)] if suffix and queue_name.endswith(suffix) else queue_name


def priority_queues(connection: Redis, base: str) -> list[Queue]:
    """Every priority's queue in drain order: a worker given this list takes high jobs first."""
    return [make_queue(connection, priority_queue_name(base, p)) for p in PRIORITIES]


def queues_ahead(queue_name: str, priority: str) -> list[str]:
    """The queues drained before ``priority``'s: every job in them runs before a job of this one."""
    base = base_queue_name(queue_name, priority)
    return [priority_queue_name(base, p) for p in PRIORITIES[: PRIORITIES.index(priority)]]


def cancel_key(job_id: str) -> str:
    """Set by DELETE /jobs/{id}; read by the worker between denoising steps."""
    return f"{KEY_PREFIX}:cancel:{job_id}"


def idempotency_key(queue_name: str, digest: str) -> str:
    return f"{KEY_PREFIX}:idem:{queue_name}:{digest}"


def worker_alive_key(worker_name: str) -> str:
    """Expires unless the worker's heartbeat thread refreshes it: a live worker has this key."""
    return f"{KEY_PREFIX}:worker:{worker_name}"


WORKER_ALIVE_PATTERN = f"{KEY_PREFIX}:worker:*"
