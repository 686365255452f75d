"""``mammogen train``: train a MAMBO stage or the dual-view model, export bundles, build the demo bundles.

    mammogen train stage1|stage2|stage3|dualview --data DIR_OR_INDEX --out RUN_DIR [options]
    mammogen train export mambo --stage1 RUN --stage2 RUN --stage3 RUN --out BUNDLE_DIR
    mammogen train export dualview --run RUN --out BUNDLE_DIR
    mammogen train demo --out models/demo_bundles --seed 0
    mammogen train lesions --bundle models/demo_bundles/demo-mambo --work runs/lesions

Multi-GPU / multi-host: ``accelerate launch -m app.cli.main train stage3 ...``; every rank draws its
own batches from (seed, step, rank), so the run is reproducible for a given world size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from models.errors import BadInputError

TRAIN_TARGETS = ("stage1", "stage2", "stage3", "dualview")
THREADS_HELP = "CPU threads for torch; auto: 1 on a busy machine (2 threads thrash under load), else all cores"


def set_threads(value: str) -> int:
    """Measured on the shared 2-core machine at load 12: 1 thread 5 s/step, 2 threads 30-57 s/step."""
    import os

    import torch

    if value == "auto":
        cores = os.cpu_count() or 1
        n = 1 if os.getloadavg()[0] >= cores - 0.5 else cores
    else:
        try:
            n = int(value)
        except ValueError as exc:
            raise BadInputError(f"--threads must be auto or a positive integer, got {value!r}") from exc
        if n < 1:
            raise BadInputError(f"--threads must be positive, got {n}")
    torch.set_num_threads(n)
    return n


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for target in TRAIN_TARGETS:
        what = "the dual-view CC+MLO model" if target == "dualview" else f"MAMBO {target}"
        _configure_stage(sub.add_parser(target, help=f"train {what}", description=f"Train {what}."))

    exp = sub.add_parser("export", help="export finished runs as a checkpoint bundle")
    exp.add_argument("kind", choices=("mambo", "dualview"))
    exp.add_argument("--stage1", type=Path, help="run folder of the global (stage 1) network")
    exp.add_argument("--stage2", type=Path, help="run folder of the local-context (stage 2) network")
    exp.add_argument("--stage3", type=Path, help="run folder of the patch (stage 3) network")
    exp.add_argument("--run", type=Path, help="run folder of the dual-view network")
    exp.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    exp.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    exp.add_argument("--version", default="1.0.0")
    exp.add_argument("--weights", choices=("ema", "raw"), default="ema")
    exp.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored weight dtype")
    exp.add_argument("--description", default="")
    exp.add_argument("--overwrite", action="store_true")

    demo = sub.add_parser("demo", help="train the shipped demo bundles on healthy phantoms (CPU, < 1 h)")
    demo.add_argument(
        "--out", type=Path, default=Path("models/demo_bundles"), help="folder for demo-mambo/, demo-dualview/"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--work", type=Path, default=None, help="run folders (default: runs/demo)")
    demo.add_argument(
        "--plan",
        choices=("cpu", "gpu", "quick"),
        default="cpu",
        help="cpu: about an hour on 2 cores (--jobs 2); gpu: one H100/H200, all four networks at once "
        "(--jobs 4); quick: minutes, proves the path (30 steps per network, 8 cases)",
    )
    demo.add_argument("--quick", action="store_true", help="same as --plan quick")
    demo.add_argument("--steps", type=int, default=None, help="override the steps of every network")
    demo.add_argument("--samples", type=Path, default=None, help="also generate PNGs from the bundles here")
    demo.add_argument("--sample-steps", type=int, default=25, help="denoising steps of the sample PNGs")
    demo.add_argument("--resume", action="store_true", help="continue interrupted runs in --work")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--threads", default="auto", help=THREADS_HELP)
    demo.add_argument("--jobs", type=int, default=1, help="train the 4 networks in N parallel processes")

    les = sub.add_parser(
        "lesions",
        help="train the mask-conditioned lesion network on lesion phantoms and add it to a MAMBO bundle",
        description="Train the lesion network (insertion) for a MAMBO bundle's geometry, schedule and "
        "preprocessing on lesion phantoms with their healthy twins, then write the bundle with it added.",
    )
    les.add_argument("--bundle", type=Path, default=Path("models/demo_bundles/demo-mambo"), help="MAMBO bundle")
    les.add_argument("--work", type=Path, default=Path("runs/lesions"), help="run folder")
    les.add_argument("--out", type=Path, default=None, help="write the extended bundle here (default: in place)")
    les.add_argument("--version", default=None, help="version of the extended bundle (default: unchanged)")
    les.add_argument(
        "--data",
        type=Path,
        default=None,
        help="real images with ROI label masks instead of lesion phantoms: a folder (x_mask.png beside "
        "x.dcm/x.png) or an index CSV with a label_mask/mask column; each mask region is one lesion",
    )
    les.add_argument("--kind", default="mass", help="the lesion kind of every ROI in --data")
    les.add_argument("--seed", type=int, default=0)
    les.add_argument("--steps", type=int, default=None, help="training steps (default: the plan's)")
    les.add_argument("--cases", type=int, default=None, help="lesion phantom cases (default: the plan's)")
    les.add_argument("--resume", action="store_true", help="continue an interrupted run in --work")
    les.add_argument("--no-progress", action="store_true")
    les.add_argument("--threads", default="auto", help=THREADS_HELP)
    les.add_argument("--jobs", type=int, default=1, help="processes that draw the phantoms")


def _configure_stage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder of DICOM/PNG/TIFF files, or an index CSV from `mammogen ingest`",
    )
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log.jsonl, samples, final/)")
    p.add_argument("--cache", type=Path, default=None, help="preprocessed-image cache (default: RUN_DIR/cache)")
    p.add_argument(
        "--preset", choices=("tiny", "cpu", "small", "paper"), default="paper", help="U-Net size (models.unet)"
    )
    p.add_argument(
        "--prediction-type",
        choices=("v_prediction", "epsilon"),
        default="v_prediction",
        help="what the network predicts (recorded in the bundle; epsilon is the papers', v converges faster)",
    )
    p.add_argument(
        "--clip-sample",
        choices=("yes", "no"),
        default="yes",
        help="samplers clip the predicted x0 to the model range [-1, 1] (recorded in the bundle)",
    )
    p.add_argument("--min-snr-gamma", type=float, default=0.0, help="> 0: Min-SNR-gamma loss weighting (e.g. 5)")
    p.add_argument(
        "--conditioning",
        choices=("aligned", "paper"),
        default="aligned",
        help="stage-2/3 context: aligned adds the coarser image upsampled onto the tile (MAMBO)",
    )
    p.add_argument("--init-from", type=Path, default=None, help="local diffusers UNet2DModel folder to fine-tune")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--lr", type=float, default=None, help="default 5e-5 (MAMBO) / 1e-5 (dual-view, paper)")
    p.add_argument("--optimizer", choices=("adamw", "adam"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--lr-schedule", choices=("constant", "cosine", "linear"), default="constant")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--sample-every", type=int, default=1000, help="preview PNGs in RUN_DIR/samples (0: at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default="auto", help="auto: bf16 on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--patch-size", type=int, default=256, help="s: network input side (MAMBO)")
    p.add_argument("--scale", type=int, default=3, help="k: local context = k*s crop (MAMBO)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap used at inference (recorded)")
    p.add_argument("--size", type=int, default=256, help="dual-view image side")
    p.add_argument("--views", default="CC,MLO", help="views to use from an index (comma list; empty: all)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", default="auto", help=THREADS_HELP)


def load_images(data: Path, cache_dir: Path, views: tuple[str, ...] | None) -> Any:
    """A memory-mapped ImageSet over a folder or an index CSV; unreadable files are listed and skipped."""
    from training.cache import CachedImages, PreprocessCache
    from training.ingest import index_folder, read_index

    if not data.exists():
        raise BadInputError(f"--data {data} does not exist")
    if data.is_dir():
        index = cache_dir / "index.csv"
        report = index_folder(data, index)
        print(f"indexed {report.indexed} images ({report.by_view}); {report.failed} unreadable -> {report.errors_path}")
    else:
        index = data
    rows = read_index(index)
    if views:
        rows = [r for r in rows if (r.get("view") or "") in views]
    cache = PreprocessCache(cache_dir)
    ok, failed = cache.fill([r["path"] for r in rows])
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not ok:
        raise BadInputError(f"no usable training images in {data}")
    return CachedImages(ok, cache)


def run(args: argparse.Namespace) -> int:
    if args.target != "export":
        set_threads(args.threads)
    if args.target == "export":
        return _run_export(args)
    if args.target == "demo":
        return _run_demo(args)
    if args.target == "lesions":
        return _run_lesions(args)
    return _run_stage(args)


def labelled_pairs(data: Path) -> list[tuple[Path, Path]]:
    """(image, ROI label mask) pairs: a folder (``x_mask.png`` beside ``x.*``) or an index CSV from
    `mammogen ingest` (its ``label_mask`` column, or a ``mask`` column a user filled in)."""
    from training.ingest import read_index, split_label_masks

    if data.is_dir():
        _, labels, orphans = split_label_masks(sorted(p for p in data.rglob("*") if p.is_file()))
        if orphans:
            raise BadInputError(f"label masks without their image: {', '.join(str(p) for p in orphans[:3])}")
        pairs = sorted(labels.items())
    elif data.is_file():
        rows = read_index(data)
        column = next((c for c in ("label_mask", "mask") if rows and c in rows[0]), None)
        if column is None:
            raise BadInputError(f"{data} has no label_mask (or mask) column")
        pairs = [(Path(r["path"]), Path(r[column])) for r in rows if r.get(column)]
    else:
        raise BadInputError(f"--data {data} does not exist")
    if not pairs:
        raise BadInputError(f"no image with a label mask in {data} (x_mask.png beside x.*, or a label_mask column)")
    return pairs


def _run_lesions(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from training.lesions import LesionPlan, add_lesion_network, train_lesion_network

    plan = LesionPlan()
    if args.steps is not None:
        plan = replace(plan, steps=args.steps)
    if args.cases is not None:
        plan = replace(plan, cases=args.cases)
    data = None if args.data is None else labelled_pairs(args.data)
    result = train_lesion_network(
        args.bundle,
        args.work,
        plan=plan,
        seed=args.seed,
        resume=args.resume,
        progress=not args.no_progress,
        jobs=args.jobs,
        data=data,
        kind=args.kind,
    )
    out = add_lesion_network(args.bundle, args.work, args.out, args.version)
    print(
        json.dumps(
            {
                "bundle": str(out),
                "steps": result.steps,
                "final_loss": result.final_loss,
                "seconds": round(result.seconds, 1),
            }
        )
    )
    return 0


def _run_stage(args: argparse.Namespace) -> int:
    from models.geometry import MamboGeometry
    from models.schedulers import NOISE_SCHEDULE
    from training.loop import TrainConfig, train_stage

    dual = args.target == "dualview"
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else (1e-5 if dual else 5e-5),
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        sample_every=args.sample_every,
        log_every=args.log_every,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        min_snr_gamma=args.min_snr_gamma,
    )
    schedule = {**NOISE_SCHEDULE, "prediction_type": args.prediction_type, "clip_sample": args.clip_sample == "yes"}
    try:
        geometry = MamboGeometry(s=args.patch_size, k=args.scale, overlap=args.overlap, conditioning=args.conditioning)
    except ValueError as exc:
        raise BadInputError(str(exc)) from exc
    views = tuple(v.strip().upper() for v in args.views.split(",") if v.strip()) or None
    images = load_images(args.data, args.cache or args.out / "cache", views)
    result = train_stage(
        images,
        args.target,
        args.out,
        config=config,
        geometry=geometry,
        preset=args.preset,
        dualview_size=args.size,
        init_from=args.init_from,
        resume=args.resume,
        progress=not args.no_progress,
        schedule=schedule,
    )
    print(
        json.dumps(
            {
                "run": str(result.run_dir),
                "steps": result.steps,
                "first_loss": result.first_loss,
                "final_loss": result.final_loss,
                "seconds": round(result.seconds, 1),
                "resumed_from": result.resumed_from,
            }
        )
    )
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    if args.kind == "mambo":
        runs = {"global": args.stage1, "local": args.stage2, "patch": args.stage3}
        missing = [f"--stage{i}" for i, v in enumerate(runs.values(), 1) if v is None]
        if missing:
            raise BadInputError(f"a mambo bundle needs {', '.join(missing)}")
    else:
        if args.run is None:
            raise BadInputError("a dualview bundle needs --run")
        runs = {"dualview": args.run}
    out = export_bundle(
        args.kind,
        runs,
        args.out,
        name=args.name or args.out.name,
        version=args.version,
        weights=args.weights,
        dtype=args.dtype,
        description=args.description,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from training.demo import PLANS, STAGES, run_demo, write_demo_samples

    plan = PLANS["quick" if args.quick else args.plan]
    if args.steps is not None:
        plan = replace(plan, steps=dict.fromkeys(STAGES, args.steps))
    work = args.work or Path("runs") / "demo"
    report = run_demo(
        args.out,
        seed=args.seed,
        plan=plan,
        work_dir=work,
        progress=not args.no_progress,
        resume=args.resume,
        jobs=args.jobs,
    )
    if args.samples is not None:
        for path in write_demo_samples(args.samples, args.out, seed=args.seed, steps=args.sample_steps):
            print(f"sample {path}")
    print(json.dumps(report, indent=2))
    return 0
