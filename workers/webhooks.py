"""Webhooks: when a job ends (succeeded, failed, cancelled) its final record is POSTed to its callback_url.

A slow or dead receiver must never hold a worker, so nothing here runs in one: a job with a
callback is put in one Redis outbox (a sorted set scored by when it is next looked at) when it is
accepted, and `WebhookLoop`, a thread in each API process, claims due entries with a lease
(`workers.delivery.claim_from`, the PACS outbox's claim). A job that has not ended is looked at
again a second later; one that has is sent, signed, bounded by a timeout, retried with backoff
(`DeliveryPolicy`) until a 2xx or the attempts run out, each attempt recorded under the job's
webhook key (the job record shows it). Whatever path ends a job (worker, cancel, watchdog), the
loop sees its final state, and exactly one state is delivered.

Only http(s) URLs; a host that resolves to a loopback, link-local (cloud metadata), multicast,
reserved or unspecified address is refused unless it is on the allow-list, and with an allow-list
set only its hosts are called. Redirects are not followed. Signature: ``X-Mammogen-Signature:
sha256=HMAC-SHA256(secret, "<X-Mammogen-Timestamp>." + body)`` in hex.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis import Redis

from models.errors import BadInputError
from workers.delivery import DeliveryPolicy, claim_from
from workers.queueing import KEY_PREFIX

log = logging.getLogger(__name__)

OUTBOX = f"{KEY_PREFIX}:webhooks"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
SIGNATURE_HEADER = "X-Mammogen-Signature"
TIMESTAMP_HEADER = "X-Mammogen-Timestamp"
#: What `render` returns: the job's public status and the body to send, or None when the job is gone.
Render = Callable[[str], "tuple[str, bytes] | None"]


def webhook_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:webhook:{job_id}"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value; a receiver recomputes it and compares in constant time."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_callback_url(url: str, allowed_hosts: list[str]) -> str:
    """The URL if the service may call it; BadInputError naming why not. Resolves the host now (and
    again before every attempt, so a name that later points at a forbidden address is refused then)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInputError("callback_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise BadInputError("callback_url must not carry credentials")
    host = parts.hostname.lower()
    listed = host in {h.lower() for h in allowed_hosts}
    if allowed_hosts and not listed:
        raise BadInputError(f"callback_url host {host!r} is not on the allow-list (MAMMOGEN_WEBHOOK_ALLOWED_HOSTS)")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError) as exc:
        raise BadInputError(f"callback_url host {host!r} does not resolve") from exc
    if not listed and not all(_public(a) for a in addresses):
        raise BadInputError(
            f"callback_url host {host!r} resolves to a loopback, link-local or reserved address; "
            "allow it with MAMMOGEN_WEBHOOK_ALLOWED_HOSTS"
        )
    return url


def schedule_webhook(connection: Redis, job_id: str, url: str, ttl_s: int) -> None:
    """Record the job's callback and put it in the outbox (called when the job is accepted)."""
    record = {"url": url, "status": "waiting", "event": None, "attempts": [], "delivered_at": None}
    with connection.pipeline() as pipe:
        pipe.set(webhook_key(job_id), json.dumps(record), ex=ttl_s)
        pipe.zadd(OUTBOX, {job_id: time.time() + 1.0})
        pipe.execute()


def read_webhook(connection: Redis, job_id: str) -> dict[str, Any] | None:
    raw = connection.get(webhook_key(job_id))
    return json.loads(raw) if raw else None


class WebhookLoop(threading.Thread):
    def __init__(
        self,
        connection: Redis,
        render: Render,
        *,
        secret: bytes,
        policy: DeliveryPolicy,
        allowed_hosts: list[str],
        timeout_s: float,
        poll_s: float = 0.5,
        recheck_s: float = 1.0,
    ) -> None:
        super().__init__(name="mammogen-webhooks", daemon=True)
        self.connection = connection
        self.render = render
        self.secret = secret
        self.policy = policy
        self.allowed_hosts = allowed_hosts
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self._stop_event = threading.Event()

    def run_once(self) -> int:
        done = 0
        while not self._stop_event.is_set():
            job_id = claim_from(self.connection, OUTBOX, self.policy.lease_s)
            if job_id is None:
                return done
            self.process(job_id)
            done += 1
        return done

    def process(self, job_id: str) -> None:
        record = read_webhook(self.connection, job_id)
        rendered = self.render(job_id) if record is not None else None
        if record is None or rendered is None or record["status"] in ("delivered", "failed"):
            self.connection.zrem(OUTBOX, job_id)  # expired, deleted, or already done
            return
        status, body = rendered
        if status not in TERMINAL:
            self.connection.zadd(OUTBOX, {job_id: time.time() + self.recheck_s})
            return
        record["event"] = f"job.{status}"
        attempt = self._send(record["url"], record["event"], job_id, body)
        record["attempts"].append(attempt)
        if attempt.get("status_code") is not None and 200 <= attempt["status_code"] < 300:
            record.update(status="delivered", delivered_at=attempt["at"], next_attempt_at=None)
            self.connection.zrem(OUTBOX, job_id)
        elif len(record["attempts"]) >= self.policy.attempts:
            record.update(status="failed", next_attempt_at=None)
            self.connection.zrem(OUTBOX, job_id)
        else:
            due = time.time() + self.policy.delay(len(record["attempts"]))
            record.update(status="retrying", next_attempt_at=due)
            self.connection.zadd(OUTBOX, {job_id: due})
        ttl = self.connection.ttl(webhook_key(job_id))
        self.connection.set(webhook_key(job_id), json.dumps(record), ex=ttl if ttl > 0 else 7 * 24 * 3600)

    def _send(self, url: str, event: str, job_id: str, body: bytes) -> dict[str, Any]:
        import httpx

        at = time.time()
        attempt: dict[str, Any] = {"at": at, "status_code": None, "error": None}
        try:
            check_callback_url(url, self.allowed_hosts)
            timestamp = str(int(at))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "mammogen-webhooks",
                "X-Mammogen-Event": event,
                "X-Mammogen-Job": job_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            }
            response = httpx.post(url, content=body, headers=headers, timeout=self.timeout_s, follow_redirects=False)
            attempt["status_code"] = response.status_code
            if not 200 <= response.status_code < 300:
                attempt["error"] = f"HTTP {response.status_code}"
        except BadInputError as exc:
            attempt["error"] = exc.message
        except Exception as exc:  # an unreachable receiver is retried like a 5xx
            attempt["error"] = f"{type(exc).__name__}: {exc}"[:300]
        attempt["duration_s"] = round(time.time() - at, 3)
        if attempt["error"]:
            log.warning("webhook of job %s to %s: %s", job_id, url, attempt["error"])
        return attempt

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # a Redis blip must not end deliveries; the lease returns the job later
                log.exception("webhook loop pass failed")

    def stop(self) -> None:
        self._stop_event.set()
