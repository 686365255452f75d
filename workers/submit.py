"""Admission of new jobs: queue-length bound, idempotency keys, timeouts and the retry policy.

The API calls this after validating a request; nothing here knows HTTP. The bound is exact
under concurrency (WATCH on the queue list + MULTI), so 100 simultaneous POSTs never push the
queue past ``max_queue_length``: each one is either enqueued or refused with QueueFullError.
Each priority has its own RQ queue (``workers.queueing.PRIORITIES``) and its own exact bound, so bulk
low-priority work can never fill the room interactive jobs need. An idempotency key maps to one job
id for ``idempotency_ttl_s``: a retried POST gets the first
job back instead of running twice; the same key with other parameters is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import WatchError
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job

from models.errors import BadInputError, QueueFullError
from workers.job_requests import Job as JobRequest
from workers.queueing import JOB_FUNCTIONS, PRIORITIES, SERIALIZER, idempotency_key, make_queue, priority_queue_name
from workers.webhooks import schedule_webhook, webhook_key


@dataclass(frozen=True)
class Submission:
    job_id: str
    replayed: bool  # True: an earlier request with the same idempotency key created this job


def fingerprint(kind: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, params], sort_keys=True, default=str).encode()).hexdigest()


def new_job_id() -> str:
    return uuid.uuid4().hex


class Submitter:
    def __init__(
        self,
        queue: Queue,
        *,
        max_queue_length: int,
        result_ttl_s: int,
        retries: int,
        retry_after_s: int = 10,
        idempotency_ttl_s: int = 24 * 3600,
    ) -> None:
        self.queue = queue  # the normal-priority queue; its name is the base of the others
        self.queues = {p: make_queue(queue.connection, priority_queue_name(queue.name, p)) for p in PRIORITIES}
        self.max_queue_length = max_queue_length
        self.result_ttl_s = result_ttl_s
        self.retries = retries
        self.retry_after_s = retry_after_s
        self.idempotency_ttl_s = idempotency_ttl_s

    def _queue_for(self, priority: str) -> Queue:
        if priority not in self.queues:
            raise BadInputError(f"unknown priority {priority!r}; choose one of {', '.join(PRIORITIES)}")
        return self.queues[priority]

    def _queue_full(self, priority: str) -> QueueFullError:
        from workers.estimates import retry_after_seconds

        after = retry_after_seconds(self.queue, default=self.retry_after_s)
        err = QueueFullError(
            f"the {priority}-priority job queue is full ({self.max_queue_length} jobs waiting); retry in {after} s"
        )
        err.retry_after = after  # type: ignore[attr-defined]
        return err

    def check_room(self, priority: str = "normal") -> None:
        """Cheap early refusal (QueueFullError) before a request spends anything; the bound in submit() is exact."""
        if self._queue_for(priority).count >= self.max_queue_length:
            raise self._queue_full(priority)

    def submit(
        self,
        job: JobRequest,
        *,
        timeout_s: int,
        client_request: dict[str, Any] | None = None,
        idempotency: str | None = None,
        principal: str = "",
        prepare: Callable[[str], None] | None = None,
        discard: Callable[[str], None] | None = None,
        estimate: dict[str, Any] | None = None,
        priority: str = "normal",
        callback_url: str | None = None,
    ) -> Submission:
        """Enqueue one typed job; ``prepare(job_id)`` (e.g. store the upload) runs only for a new job, and
        ``discard(job_id)`` undoes it when the job is refused after all (queue filled meanwhile).

        ``client_request`` is what the client sent (before a missing seed was drawn; default: the job):
        an idempotent retry is recognised by it."""
        kind = job.kind
        queue = self._queue_for(priority)
        if kind not in JOB_FUNCTIONS:
            raise BadInputError(f"unknown job kind {kind!r}")
        conn = self.queue.connection
        job_id = new_job_id()
        fp = fingerprint(kind, job.to_dict() if client_request is None else client_request)
        idem = None
        prepared = False
        if idempotency:
            digest = hashlib.sha256(f"{principal}\0{kind}\0{idempotency}".encode()).hexdigest()
            idem = idempotency_key(self.queue.name, digest)
            if not conn.set(idem, job_id, nx=True, ex=self.idempotency_ttl_s):
                return self._replay(idem, fp)
        try:
            self.check_room(priority)
            if prepare is not None:
                prepare(job_id)
            prepared = True
            rq_job = queue.create_job(
                JOB_FUNCTIONS[kind],
                kwargs={"job": job.to_dict()},
                job_id=job_id,
                timeout=timeout_s,
                result_ttl=self.result_ttl_s,
                failure_ttl=self.result_ttl_s,
                ttl=self.result_ttl_s,
                retry=Retry(max=self.retries) if self.retries > 0 else None,
                meta={
                    "kind": kind,
                    "fingerprint": fp,
                    "submitted_at": time.time(),
                    "estimate": estimate,
                    "priority": priority,
                },
                description=f"{kind} {job_id}",
            )
            if callback_url is not None:  # before the job can end, so its end is never missed
                schedule_webhook(conn, job_id, callback_url, self.result_ttl_s)
            self._enqueue_bounded(rq_job, queue, priority)
        except BaseException:
            if idem is not None:
                conn.delete(idem)
            if callback_url is not None:
                conn.delete(webhook_key(job_id))
            if prepared and discard is not None:
                discard(job_id)
            raise
        return Submission(job_id, replayed=False)

    def _enqueue_bounded(self, job: Job, queue: Queue, priority: str) -> None:
        with queue.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(queue.key)
                    if pipe.llen(queue.key) >= self.max_queue_length:
                        raise self._queue_full(priority)
                    pipe.multi()
                    queue.enqueue_job(job, pipeline=pipe)
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def _replay(self, idem: str, fp: str) -> Submission:
        conn = self.queue.connection
        deadline = time.monotonic() + 30.0  # the first request may still be storing a large upload
        while True:
            raw = conn.get(idem)
            if raw is None:  # the first request failed and released the key: tell the client to retry
                raise BadInputError("a request with this Idempotency-Key failed; send it again")
            job_id = raw.decode()
            try:
                job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            except NoSuchJobError:
                if time.monotonic() > deadline:
                    raise BadInputError("the job of this Idempotency-Key has expired") from None
                time.sleep(0.05)  # the first request is still enqueueing
                continue
            if job.meta.get("fingerprint") != fp:
                raise BadInputError("this Idempotency-Key was already used with different parameters")
            return Submission(job_id, replayed=True)
