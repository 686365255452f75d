"""Typed errors: each maps to exactly one HTTP status and one CLI exit code, here and nowhere else.

`models` stays free of web code; the numbers below are plain ints that the API (`app`) and the CLI
read off the exception class, so a new error kind is added in one place.
"""

from __future__ import annotations


class MammogenError(Exception):
    """Base of every error mammogen raises on purpose."""

    http_status: int = 500
    exit_code: int = 1
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.message}


class BadInputError(MammogenError):
    """The caller's input (parameters, image file) cannot be used; retrying will not help."""

    http_status = 422
    exit_code = 3
    code = "bad_input"


class UnsupportedMediaError(BadInputError):
    """The uploaded file is not a DICOM or PNG/TIFF image we can read."""

    http_status = 415
    code = "unsupported_media"


class MetricUnavailableError(BadInputError):
    """A metric needs weights or an optional package that is not here (FID Inception, LPIPS backbone)."""

    code = "metric_unavailable"


class PayloadTooLargeError(BadInputError):
    """An upload or an image (bytes, pixels, dimensions) exceeds the configured bounds."""

    http_status = 413
    code = "payload_too_large"


class CostLimitError(BadInputError):
    """A job's estimated work is over the per-request limit, or would outlast the job timeout."""

    code = "over_cost_limit"


class BundleNotFoundError(MammogenError):
    """The checkpoint bundle a job needs is not configured or not on disk."""

    http_status = 503
    exit_code = 4
    code = "bundle_missing"


class BundleIntegrityError(MammogenError):
    """A bundle's files do not match its manifest (hash, kind, version): refuse to serve it."""

    http_status = 500
    exit_code = 5
    code = "bundle_integrity"


class CancelledError(MammogenError):
    """The job was cancelled by the user; raised between denoising steps."""

    http_status = 409
    exit_code = 6
    code = "cancelled"


class OutOfMemoryError(MammogenError):
    """The device ran out of memory; smaller chunks or another device may succeed."""

    http_status = 507
    exit_code = 7
    code = "out_of_memory"


class NotBuiltError(MammogenError):
    """A feature announced in the CLI/API that this version does not implement yet."""

    http_status = 501
    exit_code = 8
    code = "not_built"


class QueueFullError(MammogenError):
    """The job queue is at its configured bound; the client should retry later."""

    http_status = 429
    exit_code = 9
    code = "queue_full"
    retry_after = 10


class TooManyWaitersError(MammogenError):
    """A client (or the server) holds as many waiting requests (long-polls, streams) as allowed."""

    http_status = 429
    exit_code = 13
    code = "too_many_waiters"
    retry_after = 1


class QueueUnavailableError(MammogenError):
    """The job queue (Redis) cannot be reached: nothing can be accepted or looked up, not the client's fault."""

    http_status = 503
    exit_code = 12
    code = "queue_unavailable"


class ServerBusyError(MammogenError):
    """The API's bounded resources (decode memory) stayed taken for too long; not the client's fault."""

    http_status = 503
    exit_code = 14
    code = "busy"
    retry_after = 5


class UnauthorizedError(MammogenError):
    """Missing or wrong API key."""

    http_status = 401
    exit_code = 10
    code = "unauthorized"


class UpstreamError(MammogenError):
    """A configured PACS could not be reached or refused a request (timeout, connection, HTTP 5xx)."""

    http_status = 502
    exit_code = 15
    code = "upstream_error"


class JobNotFoundError(MammogenError):
    """No job (or result file) with that id exists, or it has expired."""

    http_status = 404
    exit_code = 11
    code = "not_found"


ALL_ERRORS: tuple[type[MammogenError], ...] = (
    MammogenError,
    BadInputError,
    UnsupportedMediaError,
    MetricUnavailableError,
    PayloadTooLargeError,
    CostLimitError,
    BundleNotFoundError,
    BundleIntegrityError,
    CancelledError,
    OutOfMemoryError,
    NotBuiltError,
    QueueFullError,
    TooManyWaitersError,
    QueueUnavailableError,
    ServerBusyError,
    UnauthorizedError,
    JobNotFoundError,
    UpstreamError,
)
