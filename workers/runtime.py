"""What a worker process holds for its whole life: the result store and the loaded bundles.

The worker (`workers.worker.MammogenWorker`) installs one `WorkerRuntime` at start-up and loads
every configured bundle ONCE (verifying its hashes), runs its networks in the configured
acceleration (`models.acceleration.accelerate`, the same call the CLI makes) and warms them (compiles
every batch bucket) before the first heartbeat, i.e. before /readyz counts the worker; job functions
fetch it with `current()`. Nothing here reads the environment: `app/cli/worker.py` builds it from the
settings.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.acceleration import Acceleration, accelerate, networks_of, resolve_acceleration, warm_up, warmup_batches
from models.anomaly import AnomalyPipeline
from models.bundle import Bundle, load_bundle
from models.devices import resolve_device
from models.dualview import DualViewPipeline
from models.errors import BundleNotFoundError, MammogenError
from models.imaging.files import sha256_file
from models.lesion_insertion import LesionInserter
from models.mambo import MamboPipeline
from models.superres import SuperResolutionPipeline
from workers.delivery import DeliveryPolicy
from workers.store import ResultStore

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    store: ResultStore
    bundle_paths: dict[str, Path]
    device: str = "cpu"
    dtype: str = "auto"  # an explicit dtype overrides the acceleration's
    acceleration: str = "auto"  # models.acceleration.resolve_acceleration: auto | optimised | reference | label
    warmup_max_batch: int = 16  # buckets compiled/warmed at start-up (requests' default max_batch)
    pacs: dict[str, Any] = field(default_factory=dict)  # name -> DicomWebServer | DicomNode (workers.pacs)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    _bundles: dict[str, Bundle] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)
    _mambo: MamboPipeline | None = None
    _dualview: DualViewPipeline | None = None
    _hashes_of: dict[str, dict[str, Any]] = field(default_factory=dict)
    _warmup: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.device = str(resolve_device(self.device))
        self.accel: Acceleration = resolve_acceleration(self.acceleration, self.device, self.dtype)

    def load_all(self) -> None:
        """Load (and hash-check) every configured bundle and put its networks on the device now, so
        the first job pays nothing and a bundle too large for the device fails at start-up.
        Super-resolution and anomaly maps run on the MAMBO pipeline's networks. Each loaded pipeline
        is then warmed (`warm_up`), so compilation is paid here, before the worker reports ready."""
        for kind in self.bundle_paths:
            try:
                build = self.mambo if kind == "mambo" else self.dualview
                self._warm(kind, build())
            except MammogenError as exc:
                log.warning("bundle %s not loaded: %s", kind, exc.message)
            except Exception as exc:  # unreadable weights, device out of memory: serve the other kinds
                log.exception("bundle %s could not be put on %s", kind, self.device)
                with self._lock:
                    self._bundles.pop(kind, None)
                    self._errors[kind] = f"{type(exc).__name__}: {exc}"

    def bundle(self, kind: str) -> Bundle:
        """The loaded bundle of ``kind``; BundleNotFoundError names what is missing."""
        with self._lock:
            if kind in self._bundles:
                return self._bundles[kind]
            path = self.bundle_paths.get(kind)
            if path is None:
                raise BundleNotFoundError(f"no {kind} bundle is configured on this worker")
            try:
                bundle = load_bundle(path, verify=True)
            except MammogenError as exc:
                self._errors[kind] = exc.message
                raise
            self._bundles[kind] = bundle
            self._errors.pop(kind, None)
            log.info("loaded %s bundle %s %s from %s", kind, bundle.name, bundle.version, path)
            return bundle

    # the pipelines: built once per process on the loaded networks (one loader: the pipelines' from_bundle)
    def mambo(self) -> MamboPipeline:
        if self._mambo is None:
            pipe = MamboPipeline.from_bundle(self.bundle("mambo"), self.device, self.accel.dtype)
            self._mambo = accelerate(pipe, self.accel, self.device)
        return self._mambo

    def dualview(self) -> DualViewPipeline:
        if self._dualview is None:
            pipe = DualViewPipeline.from_bundle(self.bundle("dualview"), self.device, self.accel.dtype)
            self._dualview = accelerate(pipe, self.accel, self.device)
        return self._dualview

    def _warm(self, kind: str, pipe: MamboPipeline | DualViewPipeline) -> None:
        """Run every network once per batch bucket on its tile size (compile, CUDA graphs, kernel set-up)."""
        size = (pipe.geometry.s, pipe.geometry.s) if isinstance(pipe, MamboPipeline) else (pipe.height, pipe.width)
        batches = warmup_batches(self.accel, self.warmup_max_batch)
        t0 = time.perf_counter()
        for net in networks_of(pipe).values():
            warm_up(net, size, batches)
        self._warmup[kind] = {"batches": batches, "size": list(size), "seconds": round(time.perf_counter() - t0, 3)}
        log.info(
            "warmed the %s networks (%s) at batches %s in %.1f s",
            kind,
            self.accel.label,
            batches,
            self._warmup[kind]["seconds"],
        )

    def acceleration_info(self) -> dict[str, Any]:
        """What the networks run in: recorded in every job summary and in the worker's heartbeat."""
        return {
            "setting": self.acceleration,
            "label": self.accel.label,
            "config": self.accel.to_dict(),
            "device": self.device,
            "threads": torch.get_num_threads(),
            "warmed": dict(self._warmup),
        }

    def super_resolution(self) -> SuperResolutionPipeline:
        return SuperResolutionPipeline(self.mambo())

    def anomaly(self) -> AnomalyPipeline:
        return AnomalyPipeline(self.mambo())

    def lesion_inserter(self) -> LesionInserter:
        """Insertion on the MAMBO bundle's lesion network (prepared with the stage networks by `mambo`);
        BundleNotFoundError when the served bundle has none."""
        mambo = self.mambo()
        if mambo.lesion_unet is None:
            raise BundleNotFoundError(
                f"the served MAMBO bundle {mambo.name} has no lesion network: lesion insertion is unavailable"
            )
        return LesionInserter(mambo)

    def _hashes(self, kind: str, bundle: Bundle) -> dict[str, Any]:
        """The manifest's own sha256 (it lists every file's hash, so it names the exact weights) and those files."""
        if kind not in self._hashes_of:
            manifest = Path(bundle.path) / "manifest.json"
            self._hashes_of[kind] = {
                "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
                "file_sha256": dict(bundle.manifest.get("files", {})),
            }
        return self._hashes_of[kind]

    def describe(self) -> dict[str, Any]:
        bundles: dict[str, Any] = {}
        for kind, path in self.bundle_paths.items():
            if kind in self._bundles:
                b = self._bundles[kind]
                summary = b.summary()
                bundles[kind] = {"loaded": True, "path": str(path), **summary, **self._hashes(kind, b)}
            else:
                bundles[kind] = {"loaded": False, "path": str(path), "error": self._errors.get(kind, "not loaded")}
        return {
            "device": self.device,
            "dtype": self.dtype,
            "acceleration": self.acceleration_info(),
            "bundles": bundles,
        }


_current: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _current
    _current = runtime


def current() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("no WorkerRuntime installed: job functions run inside `mammogen worker`")
    return _current
