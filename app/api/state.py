"""What the API process holds while it runs: the Redis connection, queue, submitter, store, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from rq import Queue

from app.settings import Settings
from workers.store import ResultStore
from workers.submit import Submitter


@dataclass
class ServiceState:
    settings: Settings
    connection: Redis
    queue: Queue
    store: ResultStore
    submitter: Submitter
