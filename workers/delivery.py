"""Delivering a job's DICOM results to PACS: an outbox in Redis, worked by a thread in each worker.

A PACS that is slow or down must neither fail a finished job nor hold a GPU worker, and a failed
send must be retried later, not in a tight loop. So a job first writes its results, then
`schedule_results` records one entry per (instance, destination) under the job's delivery key
(the job record shows it) and puts the job id in its queue's outbox: a sorted set scored by when
the next attempt is due. `DeliveryLoop`, a daemon thread in every worker, claims a due job with a
lease, sends what is not yet delivered (each send bounded by the server's timeout), and then
either closes the record or reschedules it with exponential backoff until the attempts run out.
A worker that dies mid-attempt leaves its lease to expire and another worker takes the job over.
Delivery only reads the result files; a failed delivery never touches them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis import Redis

from models.errors import JobNotFoundError, MammogenError
from workers.pacs import store_instance
from workers.queueing import KEY_PREFIX
from workers.store import ResultFile, ResultStore

log = logging.getLogger(__name__)

# Take the earliest due job and push its score to the end of the lease, atomically: two workers
# polling the same outbox never claim one job together.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], due[1])
return due[1]
"""


@dataclass(frozen=True)
class DeliveryPolicy:
    """How often and how patiently a job's results are offered to a PACS."""

    attempts: int = 5
    backoff_s: float = 30.0
    backoff_max_s: float = 900.0
    lease_s: float = 600.0  # longer than one attempt can take: every send is bounded by its timeout

    def delay(self, attempt: int) -> float:
        """Wait after failed attempt number ``attempt`` (1-based): backoff_s, 2x, 4x, ... capped."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempt - 1))


def delivery_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:delivery:{job_id}"


def outbox_key(queue_name: str) -> str:
    return f"{KEY_PREFIX}:outbox:{queue_name}"


def read_delivery(connection: Redis, job_id: str) -> dict[str, Any] | None:
    """The delivery record of a job (what GET /jobs/{id} shows), or None when it delivers nowhere."""
    raw = connection.get(delivery_key(job_id))
    return json.loads(raw) if raw else None


def _save(connection: Redis, job_id: str, record: dict[str, Any]) -> None:
    record["updated_at"] = time.time()
    connection.set(delivery_key(job_id), json.dumps(record), keepttl=True)


def dicom_instances(store: ResultStore, job_id: str, files: Iterable[ResultFile]) -> list[dict[str, str]]:
    """The DICOM files among a job's results, with the UIDs a PACS will know them by."""
    import pydicom

    out = []
    for f in files:
        if f.media_type != "application/dicom":
            continue
        ds = pydicom.dcmread(store.path_of(job_id, f.name), stop_before_pixels=True)
        out.append({"file": f.name, "sop_instance_uid": str(ds.SOPInstanceUID), "sop_class_uid": str(ds.SOPClassUID)})
    return out


def schedule_results(
    connection: Redis,
    queue_name: str,
    job_id: str,
    store: ResultStore,
    files: Iterable[ResultFile],
    destinations: list[str],
    *,
    ttl_s: int,
    policy: DeliveryPolicy,
) -> dict[str, Any]:
    """Record every (DICOM result, destination) pair as pending and make the job due at once."""
    instances = [
        {**inst, "destination": dest, "status": "pending", "attempts": 0, "error": None, "delivered_at": None}
        for dest in destinations
        for inst in dicom_instances(store, job_id, files)
    ]
    now = time.time()
    record = {
        "status": "pending" if instances else "delivered",
        "destinations": list(destinations),
        "attempts": 0,
        "max_attempts": policy.attempts,
        "next_attempt_at": now if instances else None,
        "instances": instances,
    }
    record["updated_at"] = now
    connection.set(delivery_key(job_id), json.dumps(record), ex=max(60, int(ttl_s)))
    if instances:
        connection.zadd(outbox_key(queue_name), {job_id: now})
    return record


def attempt_delivery(
    connection: Redis,
    queue_name: str,
    job_id: str,
    store: ResultStore,
    servers: dict[str, Any],
    policy: DeliveryPolicy,
) -> dict[str, Any] | None:
    """One pass over a job's undelivered instances; reschedules or closes the record. None: no record."""
    outbox = outbox_key(queue_name)
    record = read_delivery(connection, job_id)
    if record is None:  # the job (and its record) expired: nothing left to deliver
        connection.zrem(outbox, job_id)
        return None
    record["attempts"] += 1
    record["status"] = "delivering"
    _save(connection, job_id, record)
    for inst in record["instances"]:
        if inst["status"] == "delivered":
            continue
        inst["attempts"] += 1
        server = servers.get(inst["destination"])
        try:
            if server is None:
                raise JobNotFoundError(f"destination {inst['destination']!r} is not configured on this worker")
            store_instance(inst["destination"], server, store.path_of(job_id, inst["file"]).read_bytes())
        except Exception as exc:  # every failure is recorded and retried; the files stay as they are
            inst["status"] = "retrying"
            inst["error"] = exc.message if isinstance(exc, MammogenError) else f"{type(exc).__name__}: {exc}"[:500]
            log.warning("delivery of %s/%s to %s failed: %s", job_id, inst["file"], inst["destination"], inst["error"])
        else:
            inst.update(status="delivered", error=None, delivered_at=time.time())
    left = [inst for inst in record["instances"] if inst["status"] != "delivered"]
    if not left:
        record.update(status="delivered", next_attempt_at=None)
        connection.zrem(outbox, job_id)
    elif record["attempts"] >= policy.attempts:
        for inst in left:
            inst["status"] = "failed"
        record.update(status="failed", next_attempt_at=None)
        connection.zrem(outbox, job_id)
    else:
        due = time.time() + policy.delay(record["attempts"])
        record.update(status="retrying", next_attempt_at=due)
        connection.zadd(outbox, {job_id: due})
    _save(connection, job_id, record)
    return record


def claim_due(connection: Redis, queue_name: str, lease_s: float) -> str | None:
    """The id of one job whose delivery is due, leased to the caller for ``lease_s`` seconds."""
    return claim_from(connection, outbox_key(queue_name), lease_s)


def claim_from(connection: Redis, outbox: str, lease_s: float) -> str | None:
    """The earliest due member of the sorted set ``outbox``, leased to the caller for ``lease_s`` seconds."""
    now = time.time()
    claimed = connection.eval(_CLAIM, 1, outbox, now, now + lease_s)
    return claimed.decode() if isinstance(claimed, bytes) else claimed


class DeliveryLoop(threading.Thread):
    """Works the outboxes of a worker's queues next to the job loop, so sends never block a job."""

    def __init__(
        self,
        connection: Redis,
        queue_names: list[str],
        store: ResultStore,
        servers: dict[str, Any],
        policy: DeliveryPolicy,
        poll_s: float = 1.0,
    ) -> None:
        super().__init__(name="mammogen-delivery", daemon=True)
        self.connection = connection
        self.queue_names = queue_names
        self.store = store
        self.servers = servers
        self.policy = policy
        self.poll_s = poll_s
        self._stop_event = threading.Event()

    def run_once(self) -> int:
        """Attempt every job that is due now; returns how many were attempted."""
        done = 0
        for queue in self.queue_names:
            while not self._stop_event.is_set():
                job_id = claim_due(self.connection, queue, self.policy.lease_s)
                if job_id is None:
                    break
                attempt_delivery(self.connection, queue, job_id, self.store, self.servers, self.policy)
                done += 1
        return done

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # a Redis blip must not end deliveries; the lease returns the job later
                log.exception("delivery loop pass failed")

    def stop(self) -> None:
        self._stop_event.set()
