"""A Python client of the mammogen service (httpx), for notebooks and scripts.

    from app.client import MammogenClient

    with MammogenClient("http://127.0.0.1:8000", api_key=None) as mg:
        job = mg.generate(model="mambo", height=512, width=384, steps=25, seed=7, formats=["png16", "dicom"])
        record = mg.wait(job)                      # live progress bar (tqdm) from the SSE stream
        paths = mg.download(record, "out/")        # every result, its sha256 checked

It speaks only the public HTTP API (docs/SERVICE.md) and imports nothing of the server, so it
runs wherever httpx and tqdm are installed. Refusals raise `ServiceError` with the service's
``error`` code, ``detail`` and HTTP status; a file whose bytes do not match the sha256 of the job
record raises `IntegrityError` and is not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ServiceError(Exception):
    """The service refused a request: ``status`` (HTTP), ``error`` (code) and ``detail``."""

    def __init__(self, status: int, error: str, detail: Any, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


class IntegrityError(Exception):
    """A downloaded result does not match the size or sha256 in its job record."""


JobRef = str | dict[str, Any]


def _job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else str(job["id"])


class MammogenClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, transport=transport)

    def __enter__(self) -> MammogenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- submitting ---------------------------------------------------------------------------

    def generate(self, idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        """POST /generate (MAMBO images or dual-view pairs); returns the accepted job (id, status, location)."""
        return self._accepted(self.http.post("/generate", json=params, headers=_idem(idempotency_key)))

    def super_resolve(self, file: str | os.PathLike[str] | bytes, idempotency_key: str | None = None, **params: Any):
        """POST /super-resolve with an image file (path or bytes) and form fields."""
        return self._upload("/super-resolve", file, params, idempotency_key)

    def anomaly_map(self, file: str | os.PathLike[str] | bytes, idempotency_key: str | None = None, **params: Any):
        """POST /anomaly-map with an image file (path or bytes) and form fields."""
        return self._upload("/anomaly-map", file, params, idempotency_key)

    def insert_lesion(
        self,
        file: str | os.PathLike[str] | bytes,
        lesions: list[dict[str, Any]],
        idempotency_key: str | None = None,
        masks: Sequence[str | os.PathLike[str] | bytes] = (),
        **params: Any,
    ):
        """POST /insert-lesion with an image file (path or bytes), the lesions
        (``[{"kind": "mass", "center": [row, col], "diameter_px": 24}, ...]``, or ``{"kind": "mass", "mask": N}``
        for the N-th of ``masks``: label images of the image's size, paths or bytes) and form fields."""
        form = {**params, "lesions": json.dumps(lesions)}
        return self._upload("/insert-lesion", file, form, idempotency_key, extra=[("masks", m) for m in masks])

    def _upload(
        self,
        path: str,
        file: Any,
        params: dict[str, Any],
        idempotency_key: str | None,
        extra: Sequence[tuple[str, Any]] = (),
    ) -> dict[str, Any]:
        """``file`` as the ``file`` part, ``extra`` (field, path or bytes) as further file parts."""
        form = {k: (v if isinstance(v, list) else str(v)) for k, v in params.items() if v is not None}
        parts = [("file", file, "input"), *((field, f, f"{field}-{i}") for i, (field, f) in enumerate(extra))]
        files = [(field, _file_part(f, unnamed)) for field, f, unnamed in parts]
        return self._accepted(self.http.post(path, data=form, files=files, headers=_idem(idempotency_key)))

    def _accepted(self, response: httpx.Response) -> dict[str, Any]:
        _raise_for(response)
        return response.json()

    # --- following -----------------------------------------------------------------------------

    def job(self, job: JobRef) -> dict[str, Any]:
        """The job record now (GET /jobs/{id})."""
        response = self.http.get(f"/jobs/{_job_id(job)}")
        _raise_for(response)
        return response.json()

    def events(self, job: JobRef) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, job record) from the SSE stream until the final record; reconnects with Last-Event-ID."""
        last_id: str | None = None
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream("GET", f"/jobs/{_job_id(job)}/events", headers=headers, timeout=None) as r:
                    if r.status_code != 200:
                        r.read()
                        _raise_for(r)
                    for event_id, event, data in _parse_sse(r.iter_lines()):
                        last_id = event_id or last_id
                        yield event, data
                        if event in ("final", "gone"):
                            return
            except (httpx.RemoteProtocolError, httpx.ReadError):
                continue  # the stream broke: resume after the last event seen

    def wait(self, job: JobRef, *, progress: bool = True) -> dict[str, Any]:
        """Follow the job to its end (progress bar when ``progress``); returns the final record.
        A failed or cancelled job is returned, not raised: its ``error`` says why."""
        from tqdm.auto import tqdm

        bar = tqdm(total=100, unit="%", desc=_job_id(job)[:8], disable=not progress)
        record: dict[str, Any] = {}
        try:
            for event, record in self.events(job):
                if event == "gone":
                    raise ServiceError(404, record.get("error", "not_found"), record.get("detail"))
                fraction = float((record.get("progress") or {}).get("fraction") or 0.0)
                bar.set_postfix_str(f"{record.get('status')} {(record.get('progress') or {}).get('stage') or ''}")
                bar.update(round(fraction * 100) - bar.n)
        finally:
            bar.close()
        return record

    def cancel(self, job: JobRef) -> dict[str, Any] | None:
        """DELETE /jobs/{id}: cancels a queued or running job (its record), deletes an ended one (None)."""
        response = self.http.delete(f"/jobs/{_job_id(job)}")
        _raise_for(response)
        return None if response.status_code == 204 else response.json()

    # --- results ------------------------------------------------------------------------------

    def download(self, job: JobRef, folder: str | os.PathLike[str]) -> list[Path]:
        """Every result of a succeeded job into ``folder``, each checked against its size and sha256."""
        record = job if isinstance(job, dict) and "results" in job else self.job(job)
        if record["status"] != "succeeded":
            raise ServiceError(409, "not_succeeded", f"job {record['id']} is {record['status']}, it has no results")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for link in record["results"]:
            target = out / Path(link["name"]).name
            partial = target.with_name(target.name + ".part")
            digest = hashlib.sha256()
            size = 0
            with self.http.stream("GET", link["url"]) as r:
                if r.status_code != 200:
                    r.read()
                    _raise_for(r)
                with open(partial, "wb") as f:
                    for chunk in r.iter_bytes():
                        digest.update(chunk)
                        size += len(chunk)
                        f.write(chunk)
            if size != link["size"] or digest.hexdigest() != link["sha256"]:
                partial.unlink()
                raise IntegrityError(
                    f"{link['name']}: got {size} bytes with sha256 {digest.hexdigest()}, "
                    f"the job record says {link['size']} bytes with {link['sha256']}"
                )
            partial.replace(target)
            paths.append(target)
        return paths

    def models(self) -> list[dict[str, Any]]:
        response = self.http.get("/models")
        _raise_for(response)
        return response.json()["models"]


def _file_part(file: str | os.PathLike[str] | bytes, unnamed: str) -> tuple[str, bytes, str]:
    """(name, bytes, type) of a multipart file part from a path or bytes (the server sniffs the format)."""
    if isinstance(file, bytes):
        return unnamed, file, "application/octet-stream"
    return Path(file).name, Path(file).read_bytes(), "application/octet-stream"


def _idem(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text}
    retry = response.headers.get("Retry-After")
    raise ServiceError(
        response.status_code,
        body.get("error", "invalid_request" if response.status_code == 422 else "http_error"),
        body.get("detail"),
        float(retry) if retry else None,
    )


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value
