"""What a worker process holds for its whole life: the result store and the loaded bundles.

The worker (`workers.worker.MammogenWorker`) installs one `WorkerRuntime` at start-up and loads
every configured bundle ONCE (verifying its hashes); job functions fetch it with `current()`.
Nothing here reads the environment: `app/cli/worker.py` builds it from the settings.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import BundleNotFoundError, MammogenError
from workers.store import ResultStore

log = logging.getLogger(__name__)

#: Which bundle kind each model name uses (super-resolution and anomaly maps reuse MAMBO's stages).
BUNDLE_OF_MODEL = {"mambo": "mambo", "dualview": "dualview"}


def resolve_device(device: str) -> str:
    from models.devices import resolve_device as _resolve

    return str(_resolve(device))


def resolve_dtype(dtype: str, device: str) -> Any:
    from models.devices import resolve_dtype as _resolve

    return _resolve(dtype, device)


@dataclass
class WorkerRuntime:
    store: ResultStore
    bundle_paths: dict[str, Path]
    device: str = "cpu"
    dtype: str = "auto"
    _bundles: dict[str, Any] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)
    _pipelines: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)

    def load_all(self) -> None:
        """Load (and hash-check) every configured bundle and put its networks on the device now, so
        the first job pays nothing and a bundle too large for the device fails at start-up. The
        pipelines built later (generation, super-resolution, anomaly maps) share these networks."""
        for kind in self.bundle_paths:
            try:
                bundle = self.bundle(kind)
                dtype = resolve_dtype(self.dtype, self.device)
                for name in bundle.manifest.get("networks", {}):
                    bundle.load_network(name, device=self.device, dtype=dtype)
            except MammogenError as exc:
                log.warning("bundle %s not loaded: %s", kind, exc.message)
            except Exception as exc:  # unreadable weights, device out of memory: serve the other kinds
                log.exception("bundle %s could not be put on %s", kind, self.device)
                with self._lock:
                    self._bundles.pop(kind, None)
                    self._errors[kind] = f"{type(exc).__name__}: {exc}"

    def bundle(self, kind: str) -> Any:
        """The loaded bundle of ``kind``; BundleNotFoundError names what is missing."""
        with self._lock:
            if kind in self._bundles:
                return self._bundles[kind]
            path = self.bundle_paths.get(kind)
            if path is None:
                raise BundleNotFoundError(f"no {kind} bundle is configured on this worker")
            try:
                from models.bundle import load_bundle

                bundle = load_bundle(path, verify=True)
            except MammogenError as exc:
                self._errors[kind] = exc.message
                raise
            except ImportError as exc:  # the model family is not built into this version
                self._errors[kind] = f"models.bundle unavailable: {exc}"
                raise BundleNotFoundError(f"{kind} bundle {path} cannot be loaded: {exc}") from exc
            self._bundles[kind] = bundle
            self._errors.pop(kind, None)
            log.info("loaded %s bundle %s %s from %s", kind, bundle.name, bundle.version, path)
            return bundle

    def pipeline(self, kind: str, factory: Any) -> Any:
        """A pipeline built once per process from the bundle of ``kind`` by ``factory(bundle, device, dtype)``."""
        key = f"{kind}:{getattr(factory, '__qualname__', factory)}"
        if key not in self._pipelines:
            bundle = self.bundle(kind)
            self._pipelines[key] = factory(bundle, device=self.device, dtype=resolve_dtype(self.dtype, self.device))
        return self._pipelines[key]

    def _hashes(self, kind: str, bundle: Any) -> dict[str, Any]:
        """The manifest's own sha256 (it lists every file's hash, so it names the exact weights) and those files."""
        key = f"hashes:{kind}"
        if key not in self._pipelines:
            from models.imaging.files import sha256_file

            manifest = Path(bundle.path) / "manifest.json"
            self._pipelines[key] = {
                "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
                "file_sha256": dict(bundle.manifest.get("files", {})),
            }
        return self._pipelines[key]

    def describe(self) -> dict[str, Any]:
        bundles: dict[str, Any] = {}
        for kind, path in self.bundle_paths.items():
            if kind in self._bundles:
                b = self._bundles[kind]
                summary = b.summary() if hasattr(b, "summary") else {}
                bundles[kind] = {"loaded": True, "path": str(path), **summary, **self._hashes(kind, b)}
            else:
                bundles[kind] = {"loaded": False, "path": str(path), "error": self._errors.get(kind, "not loaded")}
        return {"device": self.device, "dtype": self.dtype, "bundles": bundles}


_current: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _current
    _current = runtime


def current() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("no WorkerRuntime installed: job functions run inside `mammogen worker`")
    return _current
