"""The demo bundles: MAMBO and dual-view trained on healthy procedural phantoms, by one seeded command.

``mammogen train demo --out models/demo_bundles --seed 0`` makes healthy phantom cases (CC + MLO of
one breast each), preprocesses them with the same chain as real mammograms (``models.preprocess``:
paper §9 mask, background 0, chest wall left, the intensity mapping), trains the three MAMBO stages
and the dual-view model on the measured recipe (docs/TRAINING.md: v-prediction, x0 clipped to the
model range, aligned conditioning, the ``cpu`` U-Net, large batches at a high learning rate with
warm-up and cosine decay, EMA matched to the run length) and exports ``demo-mambo`` and
``demo-dualview`` with fp16 weights (a few MB each). The service and CLI use these bundles by
default, so a fresh checkout generates real images. Their manifests mark them as trained on synthetic phantoms,
not for research or clinical use.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.geometry import MamboGeometry
from models.imaging.files import atomic_write, write_png8
from models.imaging.readers import ImageInfo
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig, preprocess_image
from models.schedulers import RECIPE_SCHEDULE
from training.datasets import InMemoryImages, MammoImage
from training.export import export_bundle
from training.loop import TrainConfig, recipe_config, train_stage
from training.phantoms import make_phantom_case

DEMO_NOTE = "Trained on synthetic phantoms, not for research or clinical use."
DEMO_INTENDED_USE = (
    "Software demonstration and testing only. Trained on synthetic procedural phantoms; "
    "not for research or clinical use. Outputs are synthetic images, not for diagnostic use."
)
STAGES = ("stage1", "stage2", "stage3", "dualview")
NETWORK_OF = {"stage1": "global", "stage2": "local", "stage3": "patch", "dualview": "dualview"}


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo command does, so one seed and one plan reproduce the bundles."""

    cases: int = 256  # phantom breasts (each gives a CC and an MLO view); procedural, so cheap to widen
    size: tuple[int, int] = (768, 576)  # native H x W: canvas 768, mid 256, global 64
    geometry: MamboGeometry = field(default_factory=lambda: MamboGeometry(s=64, k=3, overlap=8, conditioning="aligned"))
    dualview_size: int = 64
    preset: str = "cpu"
    steps: dict[str, int] = field(
        default_factory=lambda: {"stage1": 1000, "stage2": 1000, "stage3": 1200, "dualview": 1000}
    )
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    ema_half_life: float = 0.1  # of the run: the EMA forgets the early, noisy weights whatever the length
    min_snr_gamma: float = 0.0
    schedule: dict[str, Any] = field(default_factory=lambda: dict(RECIPE_SCHEDULE))
    checkpoint_every: int = 100
    version: str = "2.0.0"

    def ema_decay(self, stage: str) -> float:
        return self.config(stage, 0).ema_decay

    def config(self, stage: str, seed: int) -> TrainConfig:
        return recipe_config(
            self.steps[stage],
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            lr_schedule=self.lr_schedule,  # type: ignore[arg-type]
            ema_half_life=self.ema_half_life,
            checkpoint_every=self.checkpoint_every,
            seed=seed,
            min_snr_gamma=self.min_snr_gamma,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["geometry"] = self.geometry.to_dict()
        return d


#: A few minutes on 2 CPU cores: proves the whole path and gives the service defaults to load.
QUICK_PLAN = DemoPlan(cases=8, steps=dict.fromkeys(STAGES, 30), warmup_steps=5, version="0.1.0")

#: One GPU (H100/H200, bf16): the same recipe with the paper-sized batch budget the CPU cannot afford.
GPU_PLAN = DemoPlan(
    cases=512,
    steps={"stage1": 4000, "stage2": 4000, "stage3": 5000, "dualview": 4000},
    batch_size=64,
    lr=1e-3,
    warmup_steps=200,
    checkpoint_every=500,
    version="2.0.0+gpu",
)

PLANS = {"cpu": DemoPlan(), "gpu": GPU_PLAN, "quick": QUICK_PLAN}


def _phantom_case_views(args: tuple[int, tuple[int, int], PreprocessConfig]) -> list[MammoImage]:
    case_seed, size, config = args
    case = make_phantom_case(case_seed, size, lesions=False)
    items = []
    for view in case.views:
        h, w = view.image.shape
        info = ImageInfo("png", h, w, laterality=view.laterality, view=view.view, patient_id=case.case_id)
        pre = preprocess_image(view.image, info, config)
        items.append(MammoImage(pre.image, pre.mask, {**pre.meta(), "study_uid": case.case_id}))
    return items


def phantom_images(
    count: int,
    seed: int,
    size: tuple[int, int],
    config: PreprocessConfig = DEFAULT_PREPROCESS,
    processes: int = 1,
) -> InMemoryImages:
    """Healthy phantom cases ``seed .. seed+count-1``, both views, preprocessed like real data.

    The description carries ``config``: training records it in run.json and the bundle manifest,
    and serving prepares real inputs with it. ``processes`` > 1 makes the cases in parallel (the
    same cases: each depends only on its seed)."""
    work = [(seed + i, size, config) for i in range(count)]
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            per_case = pool.map(_phantom_case_views, work, chunksize=max(1, count // (4 * processes)))
    else:
        per_case = [_phantom_case_views(w) for w in work]
    items = [item for views in per_case for item in views]
    description = {
        "kind": "procedural phantoms (training/phantoms.py), healthy, no lesions",
        "cases": count,
        "first_seed": seed,
        "size": list(size),
        "views": ["CC", "MLO"],
        "preprocess": config.to_dict(),
        "note": DEMO_NOTE,
    }
    return InMemoryImages(items, description)


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    plan: DemoPlan | None = None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train the four demo networks into ``work_dir`` and export both bundles into ``out_dir``.

    ``jobs`` > 1 trains stages in parallel processes: on an oversubscribed shared CPU each process
    gets a fair share, so wall time drops; the networks are the same as with ``jobs=1``.
    """
    plan = plan or DemoPlan()
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.parent / ".demo-runs"
    t0 = time.monotonic()
    images = phantom_images(plan.cases, seed, plan.size, processes=max(1, jobs))
    timings: dict[str, Any] = {"phantoms_s": round(time.monotonic() - t0, 1)}
    global _SHARED
    _SHARED = (images, plan, work, seed, resume, progress, torch.get_num_threads())
    if jobs > 1:  # forked workers inherit the phantoms; each stage is seeded alone, so results do not change
        with multiprocessing.get_context("fork").Pool(min(jobs, len(STAGES))) as pool:
            outcomes = pool.map(_train_demo_stage, STAGES)
    else:
        outcomes = [_train_demo_stage(stage) for stage in STAGES]
    runs = {NETWORK_OF[stage]: work / stage for stage in STAGES}
    losses = {stage: record for stage, record, _ in outcomes}
    timings.update({f"{stage}_s": seconds for stage, _, seconds in outcomes})
    timings["jobs"] = jobs

    extra = {"demo": {"seed": seed, "plan": plan.to_dict(), "command": demo_command(out_dir, seed, plan)}}
    common = {
        "version": plan.version,
        "dtype": "float16",
        "description": DEMO_NOTE,
        "intended_use": DEMO_INTENDED_USE,
        "extra": extra,
        "overwrite": True,
    }
    mambo = export_bundle(
        "mambo",
        {k: runs[k] for k in ("global", "local", "patch")},
        out_dir / "demo-mambo",
        name="demo-mambo",
        **common,
    )
    dv_run = {"dualview": runs["dualview"]}
    dualview = export_bundle("dualview", dv_run, out_dir / "demo-dualview", name="demo-dualview", **common)
    timings["total_s"] = round(time.monotonic() - t0, 1)
    report = {"bundles": [str(mambo), str(dualview)], "timings": timings, "losses": losses, "seed": seed}
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(work / "demo-report.json", lambda f: f.write(text.encode()))
    return report


_SHARED: tuple[Any, ...] | None = None  # (images, plan, work, seed, resume, progress, threads) for workers


def _train_demo_stage(stage: str) -> tuple[str, dict[str, Any], float]:
    assert _SHARED is not None
    images, plan, work, seed, resume, progress, threads = _SHARED
    torch.set_num_threads(threads)
    t = time.monotonic()
    result = train_stage(
        images,
        stage,
        work / stage,
        config=plan.config(stage, seed),
        geometry=plan.geometry,
        preset=plan.preset,
        dualview_size=plan.dualview_size,
        resume=resume,
        progress=progress,
        schedule=plan.schedule,
    )
    record = {"first": result.first_loss, "final": result.final_loss, "steps": result.steps}
    return stage, record, round(time.monotonic() - t, 1)


def demo_command(out_dir: str | Path, seed: int, plan: DemoPlan | None = None) -> str:
    name = next((k for k, v in PLANS.items() if v == plan), "cpu") if plan is not None else "cpu"
    return f"mammogen train demo --plan {name} --out {out_dir} --seed {seed}"


def write_demo_samples(
    out_dir: str | Path, bundles_dir: str | Path, seed: int = 0, count: int = 2, steps: int = 25
) -> list[Path]:
    """Generate from both demo bundles and write PNGs (full image, global, mid; CC|MLO pairs) to look at."""
    from models.dualview import DualViewPipeline
    from models.mambo import MamboPipeline
    from models.options import SamplingOptions, request_seeds

    out_dir, bundles_dir = Path(out_dir), Path(bundles_dir)
    written = []
    pipe = MamboPipeline.from_bundle(bundles_dir / "demo-mambo")
    for i in range(count):
        r = pipe(options=SamplingOptions(seeds=(seed + i,), steps=steps))
        written.append(write_png8(out_dir / f"mambo-{seed + i}.png", r.image))
        written.append(write_png8(out_dir / f"mambo-{seed + i}-global.png", r.global_image))
        written.append(write_png8(out_dir / f"mambo-{seed + i}-mid.png", r.mid_image))
    pairs = DualViewPipeline.from_bundle(bundles_dir / "demo-dualview")(
        SamplingOptions(seeds=request_seeds(seed, 4), steps=steps)
    )
    rows = [np.concatenate([cc, mlo], axis=1) for cc, mlo in zip(pairs.cc, pairs.mlo, strict=True)]
    grid = np.concatenate(rows, axis=0)
    written.append(write_png8(out_dir / "dualview-pairs.png", grid))
    return written
