"""Training data for the mask-conditioned lesion network: lesion phantoms and their healthy twins.

Every phantom view with lesions comes with the same acquisition without them (``PhantomView.healthy``)
and exact masks, which is what insertion needs to learn: given a healthy window and a lesion mask,
draw that lesion there and leave the rest as it was. One example is an s x s window:

    channel 0 (denoised): the view with the lesion       channel 1: the context
    channel 2: the lesion's mask (1 inside, -1 outside)  label: the lesion kind (the network's classes)

The context is the healthy twin ("healthy" conditioning, phantoms: the network learns to add a lesion
to the tissue that is there) or, for real images with ROI masks and no twin, the window with the edit
region blanked ("masked" conditioning: the network learns to fill the region with a lesion).

Windows are cut at native resolution (stage 3) and, for lesions too large for a native window, at the
mid resolution (stage 2: the view area-downsampled by the geometry's k), so one network serves both.
Lesion-free windows (empty mask, target = input, the "no class" label) teach it to change nothing
where nothing is asked. Both views go through the one preprocessing chain (``models.preprocess``,
chest wall left, the bundle's intensity mapping) with the healthy twin as its companion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from models.errors import BadInputError
from models.geometry import area_downsample_image
from models.imaging.files import read_png
from models.imaging.readers import read_image
from models.intensity import IntensityMapping
from models.lesion_spec import LESION_KINDS, LesionSpec, disc, window_origin
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig, preprocess_image
from training.phantoms import PhantomView, make_phantom_case

#: Channels of a lesion example: the denoised view, the healthy twin, the mask.
LESION_CHANNELS = 3


@dataclass(frozen=True)
class LesionExample:
    target: np.ndarray  # (s, s): the image in [0, 1] ("masked") or the lesion layer, image - twin ("residual")
    healthy: np.ndarray  # the context channel in [0, 1]
    mask: np.ndarray  # bool
    label: int  # index into the network's classes, or len(classes): no lesion
    factor: int


def view_lesion_masks(view: PhantomView) -> list[np.ndarray]:
    """One mask per lesion of a view (input frame): the mass core's connected component, or the
    calcification cluster's disc: what a user asks for with a centre and a diameter."""
    labels, _ = ndimage.label(view.mass_mask)
    masks = []
    for les in view.lesions:
        if les.kind == "calcifications":
            masks.append(disc(view.image.shape, les.center, les.diameter_px / 2.0) & view.breast_mask)
            continue
        r, c = round(les.center[0]), round(les.center[1])
        lab = labels[r, c]
        if lab == 0:  # the lobulated outline may leave the centre out: the nearest core
            near = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
            lab = labels[near[0][r, c], near[1][r, c]]
        masks.append(labels == lab if lab else disc(view.image.shape, les.center, les.diameter_px / 2.0))
    return masks


def canonical_examples(
    image: np.ndarray,
    lesion_masks: list[np.ndarray],
    kinds: list[str],
    breast: np.ndarray,
    classes: tuple[str, ...],
    size: int,
    factors: tuple[int, ...],
    rng: np.random.Generator,
    *,
    twin: np.ndarray | None = None,
    windows_per_lesion: int = 4,
    normal_windows: int = 2,
) -> list[LesionExample]:
    """Windows of a canonical (preprocessed) image around each lesion that hold no other lesion, at every
    factor where the lesion's edit region fits the window, plus lesion-free windows.

    With a healthy ``twin`` ("residual" conditioning) the denoised target is the lesion layer, image
    minus twin, and the context the twin; without one ("masked" conditioning: real data) the target is
    the image and the context the image with the lesion's edit region blanked to background.
    """
    out: list[LesionExample] = []
    null = len(classes)
    for factor in factors:
        low = area_downsample_image(image, factor)
        context = None if twin is None else area_downsample_image(twin, factor)
        h, w = low.shape
        scaled = [area_downsample_image(m.astype(np.float32), factor) >= 0.5 for m in lesion_masks]
        specs = [LesionSpec(k, mask=m) if m.any() else None for k, m in zip(kinds, scaled, strict=True)]
        regions = [sp.edit_region((h, w)) if sp is not None else np.zeros((h, w), bool) for sp in specs]
        anywhere = np.zeros((h, w), bool)
        for r in regions:
            anywhere |= r
        for n, spec in enumerate(specs):
            if spec is None or spec.extent_px() > size:
                continue
            others = anywhere & ~regions[n]
            slack = max(0.0, (size - spec.extent_px()) / 2.0)
            ctx = context if context is not None else np.where(regions[n], 0.0, low).astype(np.float32)
            for _ in range(windows_per_lesion):
                y = window_origin(spec.center[0] + rng.uniform(-slack, slack), size, h)
                x = window_origin(spec.center[1] + rng.uniform(-slack, slack), size, w)
                win = (slice(y, y + size), slice(x, x + size))
                if low[win].shape != (size, size) or others[win].any():
                    continue
                target = low[win] if context is None else low[win] - context[win]
                out.append(LesionExample(target, ctx[win], scaled[n][win], classes.index(spec.kind), factor))
        ys, xs = np.nonzero(area_downsample_image(breast.astype(np.float32), factor) >= 0.5)
        for _ in range(normal_windows if len(ys) else 0):
            i = int(rng.integers(len(ys)))
            y, x = window_origin(ys[i], size, h), window_origin(xs[i], size, w)
            win = (slice(y, y + size), slice(x, x + size))
            if low[win].shape == (size, size) and not anywhere[win].any():
                ctx = low if context is None else context
                target = low[win] if context is None else low[win] - context[win]
                out.append(LesionExample(target, ctx[win], np.zeros((size, size), bool), null, factor))
    return out


def view_examples(
    view: PhantomView,
    size: int,
    factors: tuple[int, ...],
    rng: np.random.Generator,
    config: PreprocessConfig = DEFAULT_PREPROCESS,
) -> list[LesionExample]:
    """A lesion phantom view's examples: the lesion layer over its healthy twin ("residual" conditioning)."""
    prep = preprocess_image(view.image, None, config, companions=[view.healthy])
    masks = [prep.to_canonical(m) for m in view_lesion_masks(view)]
    kinds = [les.kind for les in view.lesions]
    return canonical_examples(
        prep.image, masks, kinds, prep.mask, LESION_KINDS, size, factors, rng, twin=prep.companions[0]
    )


def labelled_examples(
    pairs: list[tuple[Path, Path]],
    kind: str,
    size: int,
    factors: tuple[int, ...],
    config: PreprocessConfig = DEFAULT_PREPROCESS,
    seed: int = 0,
) -> list[LesionExample]:
    """Real images with ROI label masks (``x_mask.png`` beside ``x.dcm``; CBIS-DDSM ROIs, INbreast contours
    drawn filled, VinDr-Mammo boxes drawn as rectangles): each connected region is one lesion of ``kind``;
    "masked" conditioning, since a real lesion has no healthy twin."""
    out: list[LesionExample] = []
    for n, (image_path, mask_path) in enumerate(pairs):
        image, info = read_image(image_path)
        label = read_png(mask_path)
        if label.shape != image.shape:
            raise BadInputError(f"label mask {mask_path} is {label.shape}, its image {image.shape}")
        prep = preprocess_image(image, info, config)
        regions, count = ndimage.label(prep.to_canonical(label > 0))
        masks = [regions == i for i in range(1, count + 1)]
        rng = np.random.default_rng([seed, n])
        out += canonical_examples(prep.image, masks, [kind] * count, prep.mask, (kind,), size, factors, rng)
    return out


def _case_examples(args: tuple[int, tuple[int, int], int, tuple[int, ...], PreprocessConfig]) -> list[LesionExample]:
    seed, size_hw, size, factors, config = args
    case = make_phantom_case(seed, size_hw, lesions=True)
    rng = np.random.default_rng([seed, 7])
    return [ex for view in case.views for ex in view_examples(view, size, factors, rng, config=config)]


def lesion_examples(
    cases: int,
    first_seed: int,
    image_size: tuple[int, int],
    size: int,
    factors: tuple[int, ...],
    config: PreprocessConfig = DEFAULT_PREPROCESS,
    processes: int = 1,
) -> list[LesionExample]:
    """Examples from lesion phantom cases ``first_seed ..``; each case depends only on its seed."""
    work = [(first_seed + i, image_size, size, factors, config) for i in range(cases)]
    if processes > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.map(_case_examples, work)
    else:
        parts = [_case_examples(w) for w in work]
    return [ex for part in parts for ex in part]


class LesionSource:
    """Batches of lesion examples (a pure function of the generator, as the training loop requires)."""

    channels = LESION_CHANNELS

    def __init__(
        self,
        examples: list[LesionExample],
        description: dict[str, Any] | None = None,
        classes: tuple[str, ...] = LESION_KINDS,
        conditioning: str = "residual",
    ) -> None:
        if not examples:
            raise BadInputError("no lesion examples: no lesion fits a window (or no labelled lesions were found)")
        self.size = int(examples[0].target.shape[0])
        to_model = IntensityMapping.to_model
        target = IntensityMapping.residual_to_model if conditioning == "residual" else to_model
        self.x = torch.from_numpy(
            np.stack(
                [np.stack([target(e.target), to_model(e.healthy), np.where(e.mask, 1.0, -1.0)]) for e in examples]
            ).astype(np.float32)
        )
        self.labels = torch.tensor([e.label for e in examples], dtype=torch.long)
        kinds = [classes[e.label] if e.label < len(classes) else "none" for e in examples]
        self.description = {
            **(description or {}),
            "examples": len(examples),
            "by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
            "by_factor": {str(f): sum(e.factor == f for e in examples) for f in sorted({e.factor for e in examples})},
            "classes": list(classes),
        }

    def batch(self, generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.labels), (batch_size,), generator=generator)
        x = self.x[idx]
        # a vertical flip keeps the chest wall on the left and is a plausible breast
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        return x, self.labels[idx]

    def describe(self) -> dict[str, Any]:
        return dict(self.description)


def examples_summary(examples: list[LesionExample]) -> dict[str, float]:
    """Diameters (px, equivalent disc) of the lesion windows: what sizes the network saw."""
    d = [2.0 * math.sqrt(e.mask.sum() / math.pi) * e.factor for e in examples if e.mask.any()]
    return {"lesions": len(d), "diameter_min": float(min(d, default=0)), "diameter_max": float(max(d, default=0))}


# -- the lesion network of a MAMBO bundle ------------------------------------------------------------

#: Phantom seeds of the lesion training cases: disjoint from the healthy demo cases (0 ..) and from the
#: held-out lesion evaluation cases (``EVAL_FIRST_SEED`` ..).
TRAIN_FIRST_SEED = 100_000
EVAL_FIRST_SEED = 900_000


@dataclass(frozen=True)
class LesionPlan:
    """The lesion network's recipe: the demo recipe (v-prediction, clipped x0, the cpu U-Net, large
    batches at a high learning rate with warm-up and cosine decay, EMA over the last 10 %) plus label
    dropout, so one network is both the class-conditional and the unconditional model."""

    cases: int = 192
    first_seed: int = TRAIN_FIRST_SEED
    image_size: tuple[int, int] = (768, 576)
    preset: str = "cpu"
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    label_dropout: float = 0.1
    ema_half_life: float = 0.1
    checkpoint_every: int = 100

    def config(self, seed: int) -> Any:
        from training.loop import recipe_config

        return recipe_config(
            self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            lr_schedule="cosine",
            ema_half_life=self.ema_half_life,
            checkpoint_every=self.checkpoint_every,
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "image_size": list(self.image_size)}


def train_lesion_network(
    bundle: str | Any,
    run_dir: str | Any,
    *,
    plan: LesionPlan | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    jobs: int = 1,
    stop_after: int | None = None,
    data: list[tuple[Path, Path]] | None = None,
    kind: str = "mass",
) -> Any:
    """Train the lesion network for ``bundle`` (its geometry, schedule and preprocessing) into ``run_dir``:
    on lesion phantoms ("residual" conditioning, every phantom kind), or on ``data`` (image, ROI label
    mask) pairs whose regions are all lesions of ``kind`` ("masked" conditioning)."""
    from models.bundle import open_bundle
    from models.unet import build_unet
    from training.loop import diffusion_objective, diffusion_previewer, train

    plan = plan or LesionPlan()
    b = open_bundle(bundle, "mambo")
    s, k = int(b.geometry["s"]), int(b.geometry["k"])
    if data is None:
        classes, conditioning = LESION_KINDS, "residual"
        examples = lesion_examples(plan.cases, plan.first_seed, plan.image_size, s, (1, k), b.preprocess, jobs)
        what = {
            "kind": "procedural lesion phantoms (training/phantoms.py) with their healthy twins",
            "cases": plan.cases,
            "first_seed": plan.first_seed,
            "size": list(plan.image_size),
        }
    else:
        classes, conditioning = (kind,), "masked"
        examples = labelled_examples(data, kind, s, (1, k), b.preprocess, seed)
        what = {"kind": "images with ROI label masks", "images": len(data), "first": str(data[0][0]) if data else None}
    source = LesionSource(examples, {**what, "factors": [1, k], **examples_summary(examples)}, classes, conditioning)
    torch.manual_seed(seed)
    unet = build_unet(plan.preset, LESION_CHANNELS, 1, sample_size=s, classes=len(classes))
    meta = {
        "kind": "mambo",
        "network": "lesion",
        "preset": plan.preset,
        "classes": list(classes),
        "conditioning": conditioning,
        "factors": [1, k],
        "bundle": {"name": b.name, "version": b.version},
        "schedule": b.schedule,
        "plan": plan.to_dict(),
    }
    config = plan.config(seed)
    return train(
        unet,
        source,
        diffusion_objective(1, b.schedule, 0.0, plan.label_dropout, len(classes)),
        config,
        run_dir,
        resume=resume,
        previewer=diffusion_previewer(source, 1, count=6, schedule=b.schedule),
        meta=meta,
        progress=progress,
        stop_after=stop_after,
    )


def add_lesion_network(
    bundle_dir: str | Any, run_dir: str | Any, out_dir: str | Any | None = None, version: str | None = None
) -> Any:
    """Write ``bundle_dir`` (or a copy at ``out_dir``) with the run's EMA lesion network added, stored in
    the bundle's own weight dtype; everything else the bundle records is kept."""
    from models.bundle import load_bundle, save_bundle
    from training.export import load_run_unet, read_run

    b = load_bundle(bundle_dir)
    stored = b.manifest["training"].get("stored_dtype", "float32")
    dtype = torch.float16 if stored == "float16" else torch.float32
    networks = {name: b.load_network(name, "cpu", dtype) for name in ("global", "local", "patch")}
    networks["lesion"] = load_run_unet(run_dir, "ema", dtype)
    run = read_run(run_dir)
    training = {**b.manifest["training"]}
    training.setdefault("networks", {})["lesion"] = {
        **run["summary"],
        "config": run["config"],
        "data": run["data"],
        "meta": run["meta"],
    }
    m = b.manifest
    return save_bundle(
        Path(out_dir) if out_dir is not None else b.path,
        kind="mambo",
        name=m["name"],
        version=version or m["version"],
        networks=networks,
        geometry=m["geometry"],
        intensity=b.intensity,
        schedule=m["schedule"],
        training=training,
        random_weights=m["random_weights"],
        description=m["description"],
        extra=m.get("extra"),
        intended_use=m["intended_use"],
        preprocess=b.preprocess,
        overwrite=True,
        classes={"lesion": list(run["meta"].get("classes", LESION_KINDS))},
        network_info={"lesion": {"conditioning": run["meta"]["conditioning"]}},
    )
