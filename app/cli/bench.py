"""``mammogen bench``: U-Net throughput, full-image generation against the reference, stitching counts,
and the served path (``bench service``: the same job through the queue per acceleration setting).

Every measurement is one JSON line on stdout (and appended to ``--out`` if given), so runs on
different machines can be collected into docs/PERFORMANCE.md without parsing prose.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from models.errors import BadInputError


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")


def _add_acceleration(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed-ups (default: the reference configuration, fp32 NCHW eager)")
    g.add_argument("--optimised", action="store_true", help="the measured-fastest configuration for the device")
    g.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (network weights and activations)")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    g.add_argument("--compile", dest="compile_mode", default=None, metavar="MODE", help="torch.compile mode")
    g.add_argument("--no-compile", action="store_true", help="eager even where --optimised would compile")
    g.add_argument("--attention", choices=("sdpa", "explicit"), default=None, help="attention kernel")
    g.add_argument("--static-batches", action="store_true", help="pad batches to powers of two (for compile)")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)

    p = sub.add_parser("unet", help="forward passes/s, FLOPs per pass and TFLOP/s vs peak of a preset U-Net")
    p.add_argument("--preset", default="paper", choices=("tiny", "small", "paper"))
    p.add_argument("--batch-sizes", type=_ints, default=[1, 2, 4])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--in-channels", type=int, default=3, help="3 for stages 2-3, 1 for stage 1")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-reference", action="store_true", help="skip the interleaved fp32 reference")
    p.add_argument("--no-peak", action="store_true", help="do not measure the CPU peak (saves a few seconds)")
    p.add_argument("--ablation", action="store_true", help="each speed-up alone, then all together, in one run")
    p.add_argument(
        "--configs",
        default=None,
        metavar="LABELS",
        help="comma list of configurations by label (e.g. float32+sdpa,bfloat16+channels_last+sdpa), in one run",
    )
    _add_acceleration(p)
    _add_common(p)

    p = sub.add_parser("counts", help="model evaluations and sequential depth per stitching mode (no model)")
    p.add_argument("--height", type=int, default=3840)
    p.add_argument("--width", type=int, default=3840)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--max-batch", type=int, default=None, help="chunk size of one model call")
    p.add_argument("--images", type=int, default=1, help="images of one job in lock-step")
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--overlap", type=int, default=None, help="tile overlap (default: patch / 8)")
    p.add_argument("--out", type=Path, default=None)

    p = sub.add_parser("steps", help="fewer steps (DPM-Solver++) vs the 150-step image: time, seams, distance")
    p.add_argument(
        "--model",
        default="mambo",
        choices=("mambo", "dualview", "superres"),
        help="the job kind: MAMBO generation, dual-view pairs, or super-resolution of phantoms",
    )
    p.add_argument("--bundle", type=Path, default=None, help="a trained bundle (default: the configured one)")
    p.add_argument("--height", type=int, default=256, help="MAMBO output / super-resolution original height")
    p.add_argument("--width", type=int, default=256, help="MAMBO output / super-resolution original width")
    p.add_argument("--seeds", type=int, default=1, help="sampling seeds --seed ... --seed+N-1 (mambo, dualview)")
    p.add_argument("--scale", type=int, default=4, help="super-resolution factor")
    p.add_argument("--phantoms", type=int, default=2, help="super-resolution: phantom cases (CC views)")
    p.add_argument("--phantom-seed", type=int, default=2000, help="first phantom seed (held out from training)")
    p.add_argument("--baseline", default="ddim:150", help="SAMPLER:STEPS of the reference image")
    p.add_argument("--settings", default="dpmsolver:20,dpmsolver:30,ddim:50", help="comma-separated SAMPLER:STEPS")
    p.add_argument("--stitching", default="wavefront", choices=("raster", "wavefront", "fused"))
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dir", type=Path, default=None, help="write each image (16-bit PNG)")
    _add_acceleration(p)
    _add_common(p)

    p = sub.add_parser("generate", help="one full image per configuration, timed per stage, vs the reference")
    p.add_argument("--bundle", type=Path, default=None, help="a MAMBO bundle (default: random weights)")
    p.add_argument("--preset", default=None, choices=("tiny", "small", "paper"), help="random-weight networks")
    p.add_argument("--random", action="store_true", help="random weights of --preset (speed only)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--patch", type=int, default=None, help="patch size s of random networks (default: preset's)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim", "dpmsolver"))
    p.add_argument("--stitching", default="wavefront", choices=("raster", "wavefront", "fused"))
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=1, help="images of one job denoised in lock-step")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--no-skip-background", action="store_true", help="denoise background tiles too")
    p.add_argument("--reference", action="store_true", help="also run raster/batch 1/fp32 in the same run")
    p.add_argument("--warmup", action="store_true", help="run the candidate once first (compile, autotune)")
    p.add_argument("--no-peak", action="store_true", help="do not measure the CPU peak (saves a few seconds)")
    p.add_argument("--save-dir", type=Path, default=None, help="write the images (16-bit PNG) and their diff")
    _add_acceleration(p)
    _add_common(p)

    p = sub.add_parser("service", help="the same job through the queue to one worker process per acceleration")
    p.add_argument("--model", default="mambo", choices=("mambo", "dualview"))
    p.add_argument("--bundle", type=Path, default=None, help="the model's bundle (default: the configured one)")
    p.add_argument("--height", type=int, default=1024, help="MAMBO height (README example: 1024)")
    p.add_argument("--width", type=int, default=768, help="MAMBO width (README example: 768)")
    p.add_argument("--count", type=int, default=1, help="images of the job (denoised in lock-step)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim", "dpmsolver"))
    p.add_argument("--stitching", default="wavefront", choices=("raster", "wavefront", "fused"))
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--settings",
        default=None,
        help="comma list of MAMMOGEN_ACCELERATION values, each optionally @THREADS; the first is the baseline "
        "(default: the pre-issue-15 served path float32+sdpa@<all cores>, then reference, then auto)",
    )
    p.add_argument("--repeats", type=int, default=1, help="rounds of one job per setting (medians reported)")
    p.add_argument("--device", default="cpu", help="the workers' device (MAMMOGEN_DEVICE)")
    p.add_argument("--redis-url", default=None, help="Redis (default: MAMMOGEN_REDIS_URL, else local, else embedded)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for start-up and every job together")
    p.add_argument("--work-dir", type=Path, default=None, help="result store and worker logs (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")


def _service(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start one worker per setting against one Redis (embedded if none answers) and time the same job."""
    import os

    from app.cli.serve import EmbeddedRedis, redis_reachable
    from app.settings import get_settings
    from models.options import SamplingOptions
    from models.requests import GenerationRequest
    from workers.bench_service import BEFORE, ServiceSetting, bench_service
    from workers.job_requests import GenerateJob
    from workers.queueing import DEFAULT_REDIS_URL, connect

    settings = get_settings()
    options = SamplingOptions(
        sampler=args.sampler,
        steps=args.steps,
        stitching=args.stitching,
        max_batch=args.max_batch,
        seeds=tuple(range(args.seed, args.seed + args.count)),
    )
    size = {"height": args.height, "width": args.width} if args.model == "mambo" else {}
    job = GenerateJob(GenerationRequest(args.model, options=options, **size), ("npy",))
    names = args.settings or f"{BEFORE},reference,auto"
    service_settings = [ServiceSetting.parse(s) for s in names.split(",") if s.strip()]
    url = args.redis_url or settings.redis_url or DEFAULT_REDIS_URL
    embedded = None
    if not redis_reachable(url):
        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="mammogen-bench-redis-")))
        url = embedded.url
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGEN_")}
    env.update(MAMMOGEN_REDIS_URL=url, MAMMOGEN_DEVICE=args.device, PYTHONPATH=str(root))
    bundle = args.bundle or settings.bundle_path(args.model)
    env[f"MAMMOGEN_{args.model.upper()}_BUNDLE"] = str(Path(bundle).resolve())
    command = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(['worker', *sys.argv[1:]]))"]
    try:
        rows = list(
            bench_service(
                connect(url),
                env,
                command,
                job,
                service_settings,
                repeats=args.repeats,
                timeout_s=args.timeout,
                work_dir=args.work_dir,
            )
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return rows


def _phantoms(args: argparse.Namespace) -> list[Any]:
    """Super-resolution originals: the CC views of held-out phantom cases at --height x --width."""
    from training.phantoms import make_phantom_case

    if args.height % args.scale or args.width % args.scale:
        raise BadInputError(f"--height and --width must be multiples of --scale {args.scale}")
    cases = [
        make_phantom_case(seed, (args.height, args.width))
        for seed in range(args.phantom_seed, args.phantom_seed + args.phantoms)
    ]
    return [(f"{c.case_id}-{c.laterality}-CC", c.cc.image, c.cc.breast_mask, c.laterality) for c in cases]


def _device(args: argparse.Namespace) -> Any:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from models.devices import resolve_device

    return resolve_device(args.device)


def _acceleration(args: argparse.Namespace, device: Any) -> Any:
    from models.acceleration import Acceleration

    base = Acceleration.optimised_for(device) if args.optimised else Acceleration.reference()
    changes: dict[str, Any] = {}
    if args.dtype:
        changes["dtype"] = args.dtype
    if args.channels_last:
        changes["channels_last"] = True
    if args.compile_mode:
        changes["compile_mode"] = args.compile_mode
        changes["static_batches"] = True
    if args.attention:
        changes["sdpa"] = args.attention == "sdpa"
    elif changes and not args.optimised:
        changes["sdpa"] = True  # any speed-up request gets the fused attention unless told otherwise
    if args.static_batches:
        changes["static_batches"] = True
    if args.no_compile:
        changes["compile_mode"], changes["static_batches"] = None, False
    return Acceleration(**{**base.to_dict(), **changes})


def ablation(full: Any) -> dict[str, Any]:
    """The reference with each switch of ``full`` turned on alone, then ``full`` itself."""
    from models.acceleration import Acceleration

    ref = Acceleration.reference()
    steps = {
        "+sdpa": {"sdpa": True},
        "+channels_last": {"channels_last": True},
        f"+{full.dtype}".replace("torch.", ""): {"dtype": full.dtype},
        f"+compile={full.compile_mode}": {"compile_mode": full.compile_mode, "static_batches": True},
    }
    out = {name: ref.with_(**change) for name, change in steps.items() if ref.with_(**change) != ref}
    out = {name: accel for name, accel in out.items() if "compile=None" not in name}
    out["all"] = full
    return out


def _configs(args: argparse.Namespace, accel: Any) -> Any:
    """``bench unet``'s candidates: --configs by label, the --ablation of ``accel``, or ``accel`` alone."""
    from models.acceleration import Acceleration

    if args.configs:
        return {label: Acceleration.from_label(label) for label in args.configs.split(",") if label.strip()}
    return ablation(accel) if args.ablation else accel


def _emit(row: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(row, default=str)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as fh:
            fh.write(line + "\n")


def run(args: argparse.Namespace) -> int:
    if args.bench == "counts":
        from models.benchmarks.counts import stitching_counts

        rows = stitching_counts(
            args.height,
            args.width,
            args.steps,
            max_batch=args.max_batch,
            images=args.images,
            patch=args.patch,
            overlap=args.overlap,
        )
        for row in rows:
            _emit(row, args.out)
        return 0
    if args.bench == "service":
        for row in _service(args):
            _emit(row, args.out)
        return 0
    device = _device(args)
    accel = _acceleration(args, device)
    if args.bench == "steps":
        from app.settings import get_settings
        from models.benchmarks.steps import bench_steps, parse_setting

        try:
            baseline = parse_setting(args.baseline)
            settings = [parse_setting(v) for v in args.settings.split(",") if v.strip()]
        except ValueError as exc:
            raise BadInputError(str(exc)) from exc
        kind = "dualview" if args.model == "dualview" else "mambo"
        if args.seeds < 1:
            raise BadInputError("--seeds must be at least 1")
        rows = bench_steps(
            model=args.model,
            bundle=args.bundle or get_settings().bundle_path(kind),
            height=args.height,
            width=args.width,
            seeds=tuple(range(args.seed, args.seed + args.seeds)),
            originals=_phantoms(args) if args.model == "superres" else (),
            scale=args.scale,
            baseline=baseline,
            settings=settings,
            stitching=args.stitching,
            max_batch=args.max_batch,
            acceleration=accel,
            device=device,
            seed=args.seed,
            save_dir=args.save_dir,
        )
    elif args.bench == "unet":
        from models.benchmarks.unet import bench_unet

        rows = bench_unet(
            args.preset,
            args.batch_sizes,
            _configs(args, accel),
            size=args.size,
            device=device,
            in_channels=args.in_channels,
            repeats=args.repeats,
            warmup=args.warmup,
            compare_reference=not args.no_reference,
            measure_peak=not args.no_peak,
        )
    else:
        from models.benchmarks.generation import bench_generate

        if args.bundle is None and not (args.random and args.preset):
            raise BadInputError("give --bundle PATH, or --preset NAME --random for random-weight networks")
        rows = bench_generate(
            bundle=args.bundle,
            preset=args.preset if args.bundle is None else None,
            height=args.height,
            width=args.width,
            patch=args.patch,
            steps=args.steps,
            sampler=args.sampler,
            eta=args.eta,
            stitching=args.stitching,
            max_batch=args.max_batch,
            acceleration=accel,
            reference=args.reference,
            skip_background=not args.no_skip_background,
            device=device,
            seed=args.seed,
            warmup=args.warmup,
            save_dir=args.save_dir,
            images=args.images,
            measure_peak=not args.no_peak,
        )
    for row in rows:
        _emit(row, args.out)
    sys.stdout.flush()
    return 0
