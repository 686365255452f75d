"""Checkpoint bundles: a folder with ``manifest.json`` + one diffusers ``save_pretrained`` folder per network.

The manifest is the contract between training and serving: it records the geometry, intensity
mapping, preprocessing chain and noise schedule the networks were trained with and the sha256 of
every file, so a worker refuses a bundle that was altered or half-copied instead of serving garbage,
and prepares real inputs exactly as the training images were prepared.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import UNet2DModel

from models.errors import BundleIntegrityError, BundleNotFoundError
from models.imaging.files import atomic_write, sha256_file
from models.intensity import IntensityMapping
from models.preprocess import PreprocessConfig

BundleKind = Literal["mambo", "dualview"]
FORMAT = "mammogen-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"

#: The networks each kind of bundle must hold, in pipeline order.
NETWORKS: dict[str, tuple[str, ...]] = {
    "mambo": ("global", "local", "patch"),
    "dualview": ("dualview",),
}
#: Networks a bundle may add: "lesion", the mask-conditioned lesion network (insertion).
OPTIONAL_NETWORKS: dict[str, tuple[str, ...]] = {"mambo": ("lesion",), "dualview": ()}

DEFAULT_INTENDED_USE = "Research and software testing. Outputs are synthetic images, not for diagnostic use."


def save_bundle(
    out_dir: str | os.PathLike[str],
    *,
    kind: BundleKind,
    name: str,
    version: str,
    networks: dict[str, UNet2DModel],
    geometry: dict[str, Any],
    intensity: IntensityMapping,
    schedule: dict[str, Any],
    training: dict[str, Any],
    random_weights: bool,
    description: str = "",
    extra: dict[str, Any] | None = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    preprocess: PreprocessConfig | None = None,
    overwrite: bool = False,
    classes: dict[str, list[str]] | None = None,
    network_info: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write a bundle atomically (built in a temp folder next to ``out_dir``, then renamed into place).

    ``classes``: the class names of each class-conditional network, in label order (the manifest
    lists them; a network's class embedding holds one more, "no class"). ``network_info``: more facts per
    network for the manifest (e.g. the lesion network's ``conditioning``).
    ``preprocess``: the chain the training images went through (default: the default chain with
    ``intensity``); its intensity mapping must be ``intensity``.
    """
    out = Path(out_dir)
    _check_networks(kind, set(networks))
    classes = classes or {}
    for net_name, unet in networks.items():
        _check_classes(net_name, unet, classes.get(net_name))
    preprocess = preprocess or PreprocessConfig(intensity=intensity)
    if preprocess.intensity != intensity:
        raise ValueError("the preprocessing config's intensity mapping differs from the bundle's")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        net_info: dict[str, Any] = {}
        for net_name in (*NETWORKS[kind], *(n for n in OPTIONAL_NETWORKS[kind] if n in networks)):
            unet = networks[net_name]
            unet.save_pretrained(tmp / net_name, safe_serialization=True)
            net_info[net_name] = {
                "path": net_name,
                "class": type(unet).__name__,
                "in_channels": int(unet.config.in_channels),
                "out_channels": int(unet.config.out_channels),
                "sample_size": _as_int(unet.config.sample_size),
                "parameters": sum(p.numel() for p in unet.parameters()),
                **({"classes": list(classes[net_name])} if classes.get(net_name) else {}),
                **(network_info or {}).get(net_name, {}),
            }
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "kind": kind,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "random_weights": bool(random_weights),
            "description": description,
            "intended_use": intended_use,
            "training": training,
            "geometry": geometry,
            "intensity": intensity.to_dict(),
            "preprocess": preprocess.to_dict(),
            "schedule": schedule,
            "networks": net_info,
            "files": files,
            "extra": extra or {},
        }
        text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
        atomic_write(tmp / MANIFEST, lambda f: f.write(text.encode()))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class Bundle:
    """A loaded (and, unless asked otherwise, verified) bundle; networks load lazily on request."""

    path: Path
    manifest: dict[str, Any]
    verified: bool = False
    _loaded: dict[tuple[str, str, str], UNet2DModel] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def geometry(self) -> dict[str, Any]:
        return self.manifest["geometry"]

    @property
    def pixel_spacing_mm(self) -> float | None:
        """The native pixel spacing (mm) the manifest's geometry records, if it records one (DICOM output)."""
        value = self.geometry.get("pixel_spacing_mm")
        return float(value) if value else None

    @property
    def schedule(self) -> dict[str, Any]:
        return self.manifest["schedule"]

    @property
    def intensity(self) -> IntensityMapping:
        return IntensityMapping.from_dict(self.manifest["intensity"])

    @property
    def preprocess(self) -> PreprocessConfig:
        """How real inputs are prepared for these networks: the manifest's record of training, or (bundles
        written before it was recorded) the default chain with the bundle's intensity mapping."""
        recorded = self.manifest.get("preprocess")
        if recorded is None:
            return PreprocessConfig(intensity=self.intensity)
        return PreprocessConfig.from_dict(recorded)

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest["random_weights"])

    def classes(self, name: str) -> tuple[str, ...]:
        """The class names of network ``name`` in label order; () for a classless network."""
        return tuple(self.manifest["networks"].get(name, {}).get("classes", ()))

    def network_info(self, name: str) -> dict[str, Any]:
        """What the manifest records about network ``name`` (channels, classes, conditioning, ...)."""
        return dict(self.manifest["networks"].get(name, {}))

    def has_network(self, name: str) -> bool:
        return name in self.manifest["networks"]

    def load_network(
        self, name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> UNet2DModel:
        """The named network in eval mode on ``device``/``dtype`` (cached per bundle object)."""
        if name not in self.manifest["networks"]:
            raise BundleIntegrityError(
                f"bundle {self.path} has no network {name!r} (has {sorted(self.manifest['networks'])})"
            )
        key = (name, str(device), str(dtype))
        if key not in self._loaded:
            folder = self.path / self.manifest["networks"][name]["path"]
            unet = UNet2DModel.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True)
            self._loaded[key] = unet.to(device).eval().requires_grad_(False)
        return self._loaded[key]

    def verify(self) -> None:
        """Recompute every file's sha256; raise BundleIntegrityError naming the first bad or missing file."""
        for rel, digest in self.manifest["files"].items():
            f = self.path / rel
            if not f.is_file():
                raise BundleIntegrityError(f"bundle {self.path}: file {rel} listed in the manifest is missing")
            if sha256_file(f) != digest:
                raise BundleIntegrityError(
                    f"bundle {self.path}: sha256 of {rel} does not match the manifest (file altered or corrupt)"
                )
        self.verified = True

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "name": m["name"],
            "version": m["version"],
            "kind": m["kind"],
            "created": m["created"],
            "random_weights": m["random_weights"],
            "description": m["description"],
            "intended_use": m["intended_use"],
            "verified": self.verified,
            "geometry": m["geometry"],
            "preprocess": self.preprocess.to_dict(),
            "schedule": m["schedule"],
            "networks": {  # with the class names of class-conditional ones (the API checks lesion kinds on them)
                k: {
                    kk: v[kk]
                    for kk in ("in_channels", "out_channels", "sample_size", "parameters", "classes")
                    if kk in v
                }
                for k, v in m["networks"].items()
            },
            "files": len(m["files"]),
            "bytes": sum((self.path / rel).stat().st_size for rel in m["files"] if (self.path / rel).is_file()),
            "training": m["training"],
        }


BundleRef = Bundle | str | os.PathLike[str]  # a loaded bundle, or its folder


def load_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Read and check a bundle's manifest (and hashes unless ``verify=False``)."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir() or not manifest_path.is_file():
        raise BundleNotFoundError(
            f"no checkpoint bundle at {root} (expected a folder with {MANIFEST}); make a random-weight one with "
            f"`mammogen bundle create --preset tiny --random --out {root}` or train one with `mammogen train`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"bundle {root}: {MANIFEST} is not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise BundleIntegrityError(f"bundle {root}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleIntegrityError(
            f"bundle {root}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this mammogen reads {SUPPORTED_FORMAT_VERSIONS})"
        )
    if manifest.get("kind") not in NETWORKS:
        raise BundleIntegrityError(f"bundle {root}: unknown kind {manifest.get('kind')!r}")
    missing = [
        k for k in ("name", "version", "geometry", "intensity", "schedule", "networks", "files") if k not in manifest
    ]
    if missing:
        raise BundleIntegrityError(f"bundle {root}: manifest lacks {', '.join(missing)}")
    try:
        _check_networks(manifest["kind"], set(manifest["networks"]))
    except ValueError as exc:
        raise BundleIntegrityError(f"bundle {root}: {exc}") from exc
    bundle = Bundle(path=root, manifest=manifest)
    try:
        if bundle.preprocess.intensity != bundle.intensity:
            raise ValueError("its preprocessing and intensity records disagree")
    except (TypeError, ValueError) as exc:
        raise BundleIntegrityError(f"bundle {root}: unusable preprocessing record ({exc})") from exc
    if verify:
        bundle.verify()
    return bundle


def open_bundle(bundle: BundleRef, kind: BundleKind) -> Bundle:
    """The one way pipelines get their bundle: a loaded one as is, a path loaded and verified; of ``kind``."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if b.kind != kind:
        raise BundleIntegrityError(f"bundle {b.name} is a {b.kind} bundle, not a {kind} one")
    return b


def _check_networks(kind: str, names: set[str]) -> None:
    if kind not in NETWORKS:
        raise ValueError(f"unknown bundle kind {kind!r}; choose one of {sorted(NETWORKS)}")
    if not set(NETWORKS[kind]) <= names <= set(NETWORKS[kind]) | set(OPTIONAL_NETWORKS[kind]):
        optional = f" (and optionally {OPTIONAL_NETWORKS[kind]})" if OPTIONAL_NETWORKS[kind] else ""
        raise ValueError(f"a {kind} bundle holds networks {NETWORKS[kind]}{optional}, got {sorted(names)}")


def _check_classes(name: str, unet: UNet2DModel, classes: list[str] | None) -> None:
    """A class-conditional network needs its class names, one per embedding but the last; a classless none."""
    embeds = getattr(unet.config, "num_class_embeds", None)
    if classes and (not embeds or len(classes) != embeds - 1):
        raise ValueError(f"network {name}: {len(classes)} class names for {embeds or 0} class embeddings (need n + 1)")
    if embeds and not classes:
        raise ValueError(f"network {name} is class-conditional ({embeds - 1} classes): name its classes")
    if classes and len(set(classes)) != len(classes):
        raise ValueError(f"network {name}: class names repeat: {classes}")


def _as_int(v: Any) -> int | list[int]:
    return [int(x) for x in v] if isinstance(v, list | tuple) else int(v)


def create_random_bundle(
    out_dir: str | os.PathLike[str],
    *,
    kind: BundleKind = "mambo",
    preset: str = "tiny",
    native_size: tuple[int, int] | None = None,
    seed: int = 0,
    name: str | None = None,
    overwrite: bool = False,
    schedule: dict[str, Any] | None = None,
    conditioning: str = "paper",
    classes: tuple[str, ...] = (),
    lesion_network: bool = False,
) -> Path:
    """A random-weight bundle (manifest says so) for smoke tests, benchmarks and wiring the service.

    Geometry follows the preset's network size s: k = 3, overlap = s / 8 (the paper's 32 at s = 256);
    ``schedule`` (default: the paper's) and ``conditioning`` let tests cover every recorded variant;
    ``classes`` makes the MAMBO stage networks class-conditional, ``lesion_network`` adds a lesion network.
    """
    from models.geometry import MamboGeometry
    from models.intensity import DEFAULT_INTENSITY
    from models.schedulers import NOISE_SCHEDULE
    from models.unet import UNET_PRESETS, build_unet

    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
    s = UNET_PRESETS[preset].sample_size
    torch.manual_seed(seed)
    if kind == "mambo":
        geo = MamboGeometry(s=s, k=3, overlap=max(1, s // 8), conditioning=conditioning)
        native = native_size or (geo.k * s, geo.k * s)
        geo.plan(*native)  # refuse native sizes the pipeline could not make
        geometry: dict[str, Any] = {**geo.to_dict(), "native_size": [int(native[0]), int(native[1])]}
        ctx = 1 + geo.context_channels
        n = len(classes)
        networks = {
            "global": build_unet(preset, 1, classes=n),
            "local": build_unet(preset, ctx, classes=n),
            "patch": build_unet(preset, ctx, classes=n),
        }
        named = {k: list(classes) for k in networks} if classes else {}
        if lesion_network:
            from models.lesion_spec import LESION_KINDS

            networks["lesion"] = build_unet(preset, 3, classes=len(LESION_KINDS))
            named["lesion"] = list(LESION_KINDS)
    elif kind == "dualview":
        named = {}
        geometry = {"size": s, "chest_wall": "left"}
        networks = {"dualview": build_unet(preset, 3, 3)}
    else:
        raise ValueError(f"unknown bundle kind {kind!r}; choose one of {sorted(NETWORKS)}")
    return save_bundle(
        out_dir,
        kind=kind,
        name=name or f"random-{kind}-{preset}",
        version="0.0.0+random",
        networks=networks,
        geometry=geometry,
        intensity=DEFAULT_INTENSITY,
        schedule={**NOISE_SCHEDULE, **(schedule or {})},
        training={"data": "none: random initial weights", "seed": seed, "preset": preset},
        random_weights=True,
        description=f"Random-weight {preset} {kind} bundle: outputs are noise-like. For tests and benchmarks only.",
        overwrite=overwrite,
        classes=named,
    )
