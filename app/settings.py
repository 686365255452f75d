"""All runtime settings in one object, read once from the environment (prefix ``MAMMOGEN_``).

Only `app` reads settings; it passes what workers and models need down as plain arguments, so
`workers` and `models` never read the environment themselves.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.delivery import DeliveryPolicy
from workers.pacs import PacsServer

_PACS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_ACCELERATION = re.compile(r"^(auto|optimised|reference|(float32|bfloat16|float16)(\+[a-z_-]+(=[a-z-]+)?)*)$")

#: Where the demo bundles live inside the repository (shipped by the training issue).
DEMO_BUNDLE_DIR = Path(__file__).resolve().parent.parent / "models" / "demo_bundles"


class Settings(BaseSettings):
    """Service and CLI configuration. Every field can be set as ``MAMMOGEN_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="MAMMOGEN_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
    )

    # Queue and storage.
    redis_url: str | None = Field(
        default=None,
        description="Redis URL, e.g. redis://127.0.0.1:6379/0. Unset: `mammogen serve` embeds one.",
    )
    queue_name: str = "mammogen"
    result_dir: Path = Field(default=Path("results"), description="Result store (may be a shared volume).")
    result_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long results are kept.")

    # Models.
    mambo_bundle: Path | None = Field(
        default=None, description="MAMBO checkpoint bundle folder; unset: the shipped demo bundle."
    )
    dualview_bundle: Path | None = Field(
        default=None, description="Dual-view checkpoint bundle folder; unset: the shipped demo bundle."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    acceleration: str = Field(
        default="auto",
        description="How the networks run: auto (the measured-fastest for the device), optimised, reference "
        "(fp32 NCHW eager), or a label such as bfloat16+channels_last+sdpa (docs/PERFORMANCE.md).",
    )
    torch_threads: int = Field(
        default=0, ge=0, description="Torch CPU threads of a worker; 0: all usable cores but one, at least one."
    )
    warmup_max_batch: int = Field(
        default=16,
        ge=1,
        description="Workers compile/warm every power-of-two batch bucket up to this before reporting ready.",
    )

    # API.
    api_key: SecretStr | None = Field(default=None, description="If set, required as X-API-Key.")
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without the API key even when one is set (default: protected)."
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base of absolute result URLs, e.g. https://mammogen.example.org; unset: relative URLs.",
    )
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=8192 * 8192, gt=0)
    max_image_side: int = Field(default=8192, gt=0)
    max_pixels_per_byte: float = Field(
        default=200.0,
        gt=0,
        description="Decompression-bomb bound: images over 1 Mpx may not decode to more pixels per file byte.",
    )
    decode_memory_mb: int = Field(
        default=1024, gt=0, description="Memory the API may spend decoding uploads at once; more uploads wait."
    )
    max_queue_length: int = Field(default=100, gt=0)
    max_waiters: int = Field(default=1000, gt=0, description="Waiting requests (long-polls, streams) in all.")
    max_waiters_per_client: int = Field(
        default=100, gt=0, description="Waiting requests per client (API key, else address); more get 429."
    )

    # Jobs.
    job_timeout_s: int = Field(default=6 * 3600, gt=0, description="Hard limit for one job.")
    max_job_evaluations: int = Field(
        default=250_000,
        gt=0,
        description="Per-request limit on a job's estimated model evaluations (256x256-tile equivalents).",
    )
    job_retries: int = Field(default=1, ge=0)
    heartbeat_s: int = Field(default=10, gt=0, description="Worker heartbeat interval.")

    # PACS (docs/DICOM.md): named servers; requests name them, never an address.
    pacs: dict[str, PacsServer] = Field(
        default_factory=dict,
        description='JSON: {"name": {"kind": "dicomweb", "url": ...} | {"kind": "dimse", "host": ..., "port": ..., '
        '"ae_title": ...}}; the only servers the service ever contacts.',
    )
    delivery_attempts: int = Field(default=5, ge=1, le=50, description="Tries to deliver a job's DICOM to a PACS.")
    delivery_backoff_s: float = Field(default=30.0, gt=0, description="Wait after the first failed try; doubles.")
    delivery_backoff_max_s: float = Field(default=900.0, gt=0, description="Longest wait between tries.")

    # Webhooks (docs/SERVICE.md): a job's callback_url gets its final record, signed with this secret.
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of webhook signatures; unset: callback_url is refused."
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="JSON list: if set, the only callback hosts; a loopback, link-local (metadata) or other "
        "non-public address is refused unless its host is listed here.",
    )
    webhook_attempts: int = Field(default=6, ge=1, le=20, description="Tries to deliver one webhook.")
    webhook_backoff_s: float = Field(default=2.0, gt=0, description="Wait after the first failed try; doubles.")
    webhook_backoff_max_s: float = Field(default=300.0, gt=0, description="Longest wait between tries.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60, description="Bound on one webhook request.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "mps") and not (v == "cuda" or v.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("acceleration")
    @classmethod
    def _check_acceleration(cls, v: str) -> str:
        if not _ACCELERATION.match(v):
            raise ValueError(
                f"acceleration must be auto, optimised, reference or a label like bfloat16+sdpa, got {v!r}"
            )
        return v

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"public_base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("pacs")
    @classmethod
    def _check_pacs_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not _PACS_NAME.match(name):
                raise ValueError(f"PACS names are 1-32 letters, digits, '-' or '_', got {name!r}")
        return v

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            attempts=self.delivery_attempts,
            backoff_s=self.delivery_backoff_s,
            backoff_max_s=max(self.delivery_backoff_max_s, self.delivery_backoff_s),
        )

    def webhook_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            attempts=self.webhook_attempts,
            backoff_s=self.webhook_backoff_s,
            backoff_max_s=max(self.webhook_backoff_max_s, self.webhook_backoff_s),
            lease_s=self.webhook_timeout_s * 3,
        )

    def worker_threads(self, workers_on_host: int = 1) -> int:
        """Torch CPU threads of one worker: ``torch_threads`` when set, else the usable cores but one,
        shared by the host's workers, at least one. The spare core serves the API, Redis and the
        heartbeat; an OpenMP team holding every core spin-waits whenever one of its threads is
        descheduled (docs/PERFORMANCE.md: 79 s with 2 threads against 2.0 s with 1 on 2 loaded cores)."""
        if self.torch_threads:
            return self.torch_threads
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, (cores - 1) // max(1, workers_on_host))

    def bundle_path(self, kind: Literal["mambo", "dualview"]) -> Path:
        """The configured bundle for a model family, falling back to the shipped demo bundle."""
        explicit = self.mambo_bundle if kind == "mambo" else self.dualview_bundle
        return explicit if explicit is not None else DEMO_BUNDLE_DIR / f"demo-{kind}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
