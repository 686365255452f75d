"""The demo bundles: MAMBO and dual-view trained on healthy procedural phantoms, by one seeded command.

``mammogen train demo --out models/demo_bundles --seed 0`` makes healthy phantom cases (CC + MLO of
one breast each), preprocesses them with the same chain as real mammograms (``models.preprocess``:
paper §9 mask, background 0, chest wall left, the intensity mapping), trains the three MAMBO stages
and the dual-view model with tiny U-Nets, and exports ``demo-mambo`` and ``demo-dualview`` with fp16
weights (a few MB each). The service and CLI use these bundles by default, so a fresh checkout
generates real (if crude) images. Their manifests mark them as trained on synthetic phantoms,
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
from training.datasets import InMemoryImages, MammoImage
from training.export import export_bundle
from training.loop import TrainConfig, train_stage
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

    cases: int = 48  # phantom breasts (each gives a CC and an MLO view)
    size: tuple[int, int] = (768, 576)  # native H x W: canvas 768, mid 256, global 64
    geometry: MamboGeometry = field(default_factory=lambda: MamboGeometry(s=64, k=3, overlap=8))
    dualview_size: int = 64
    preset: str = "tiny"
    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 1000))
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    checkpoint_every: int = 200
    version: str = "1.0.0"

    def config(self, stage: str, seed: int) -> TrainConfig:
        return TrainConfig(
            steps=self.steps[stage],
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer="adamw",
            warmup_steps=min(self.warmup_steps, max(self.steps[stage] // 5, 1)),
            lr_schedule="constant",  # so `--resume --steps N` extends a run exactly as a longer one
            grad_clip=1.0,
            ema_decay=self.ema_decay,
            checkpoint_every=self.checkpoint_every,
            sample_every=0,
            log_every=10,
            seed=seed,
            mixed_precision="auto",
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["geometry"] = self.geometry.to_dict()
        return d


#: A few minutes on 2 CPU cores: proves the whole path and gives the service defaults to load.
QUICK_PLAN = DemoPlan(cases=8, steps=dict.fromkeys(STAGES, 30), warmup_steps=5, ema_decay=0.9, version="0.1.0")


def phantom_images(
    count: int, seed: int, size: tuple[int, int], config: PreprocessConfig = DEFAULT_PREPROCESS
) -> InMemoryImages:
    """Healthy phantom cases ``seed .. seed+count-1``, both views, preprocessed like real data.

    The description carries ``config``: training records it in run.json and the bundle manifest,
    and serving prepares real inputs with it."""
    items = []
    for i in range(count):
        case = make_phantom_case(seed + i, size, lesions=False)
        for view in case.views:
            h, w = view.image.shape
            info = ImageInfo("png", h, w, laterality=view.laterality, view=view.view, patient_id=case.case_id)
            pre = preprocess_image(view.image, info, config)
            items.append(MammoImage(pre.image, pre.mask, {**pre.meta(), "study_uid": case.case_id}))
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
    images = phantom_images(plan.cases, seed, plan.size)
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

    extra = {"demo": {"seed": seed, "plan": plan.to_dict(), "command": demo_command(out_dir, seed)}}
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
    )
    record = {"first": result.first_loss, "final": result.final_loss, "steps": result.steps}
    return stage, record, round(time.monotonic() - t, 1)


def demo_command(out_dir: str | Path, seed: int) -> str:
    return f"mammogen train demo --out {out_dir} --seed {seed}"


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
