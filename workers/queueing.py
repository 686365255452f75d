"""Redis connection, queue construction and the Redis key names the service shares.

Every process (API, workers, tests) builds its queues here, so all of them agree on the JSON
serializer (pickle from Redis is unsafe and ties jobs to Python internals) and on key names.
"""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
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
}


def connect(url: str) -> Redis:
    """A Redis client with short socket timeouts so a dead server fails fast instead of hanging."""
    return Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30)


def connect_async(url: str) -> AsyncRedis:
    """The asyncio client of the same server, for waits that must not hold a thread (API only)."""
    return AsyncRedis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30)


def make_queue(connection: Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER)


def cancel_key(job_id: str) -> str:
    """Set by DELETE /jobs/{id}; read by the worker between denoising steps."""
    return f"{KEY_PREFIX}:cancel:{job_id}"


def idempotency_key(queue_name: str, digest: str) -> str:
    return f"{KEY_PREFIX}:idem:{queue_name}:{digest}"


def worker_alive_key(worker_name: str) -> str:
    """Expires unless the worker's heartbeat thread refreshes it: a live worker has this key."""
    return f"{KEY_PREFIX}:worker:{worker_name}"


WORKER_ALIVE_PATTERN = f"{KEY_PREFIX}:worker:*"
