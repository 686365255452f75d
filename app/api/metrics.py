"""Prometheus metrics of one API process: counters updated by routes, queue gauges read at scrape.

Each app gets its own `CollectorRegistry`, so several apps (tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from workers.queueing import SERIALIZER
from workers.watchdog import live_workers


class QueueCollector(Collector):
    """Queue depth, running/finished/failed jobs and live workers, read from Redis at scrape time."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        q = self.queue
        labels = ["queue"]
        try:
            values = {
                "mammogen_queue_length": ("Jobs waiting in the queue.", q.count),
                "mammogen_jobs_running": (
                    "Jobs a worker is running.",
                    StartedJobRegistry(q.name, connection=q.connection, serializer=SERIALIZER).count,
                ),
                "mammogen_jobs_finished": (
                    "Finished jobs still kept.",
                    FinishedJobRegistry(q.name, connection=q.connection, serializer=SERIALIZER).count,
                ),
                "mammogen_jobs_failed": (
                    "Failed jobs still kept.",
                    FailedJobRegistry(q.name, connection=q.connection, serializer=SERIALIZER).count,
                ),
                "mammogen_workers_live": ("Workers with a fresh heartbeat.", len(live_workers(q.connection, q.name))),
            }
            up = 1
        except Exception:
            values, up = {}, 0
        for name, (doc, value) in values.items():
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([q.name], float(value))
            yield g
        g = GaugeMetricFamily("mammogen_redis_up", "1 if Redis answered this scrape.", labels=labels)
        g.add_metric([q.name], up)
        yield g


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mammogen_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mammogen_http_request_seconds", "HTTP request latency.", ["route"], registry=self.registry
        )
        self.submitted = Counter("mammogen_jobs_submitted", "Jobs accepted, by kind.", ["kind"], registry=self.registry)
        self.rejected = Counter(
            "mammogen_requests_rejected", "Requests refused, by error code.", ["reason"], registry=self.registry
        )
        self.cancelled = Counter("mammogen_jobs_cancel_requests", "DELETE /jobs requests.", registry=self.registry)

        self.waiters = Gauge(
            "mammogen_waiters", "Requests waiting for a job to change (long-polls, streams).", registry=self.registry
        )

    def watch_queue(self, queue: Queue) -> None:
        self.registry.register(QueueCollector(queue))

    def watch_waiters(self, watcher: Any) -> None:
        self.waiters.set_function(lambda: watcher.waiting)
