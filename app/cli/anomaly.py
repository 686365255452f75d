"""``mammogen anomaly-map INPUT --lambda 700 --seeds 5 --out DIR``: where a healthy model disagrees with the image.

INPUT is a DICOM, PNG or TIFF. DIR receives, all in the input's orientation and size:
``heatmap.npy`` (raw float heat), ``heatmap.png`` (16-bit, scaled to its peak), ``mask.png`` (the
binary mask at the chosen threshold mode), ``overlay.png`` (8-bit RGB for people: heat in red,
mask outlined in yellow), ``reconstruction.png`` (the healthy reconstruction), ``preprocessed.png``
(the input as the model saw it) and ``anomaly.json`` (threshold mode and value, lambda, seeds, timings).

Threshold modes: ``otsu`` (per image, label-free), ``fixed`` (``--threshold T`` on the heat map) and
``percentile`` (``--threshold T`` calibrated on healthy images, e.g. the value that
``mammogen evaluate anomaly`` prints as the healthy 99th percentile for the same bundle and options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.common import add_acceleration_arguments, add_sampling_arguments, sampling_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT", help="mammogram (DICOM, PNG or TIFF)")
    parser.add_argument(
        "--lambda", dest="lam", type=int, default=700, help="noise timestep of 1000 to start from (paper: 700)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="reconstructions averaged (seeds --seed ... --seed+N-1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--threshold-mode", default="otsu", choices=("fixed", "otsu", "percentile"))
    parser.add_argument("--threshold", type=float, default=None, help="heat threshold for fixed/percentile modes")
    parser.add_argument(
        "--recipe",
        default="strong",
        choices=("strong", "paper"),
        help="strong: L1 residual, eroded mask, 5x5 median, blobs < 20 px dropped (docs/SUPERRES_ANOMALY.md); "
        "paper: histogram matching, positive residual, 30%% floor, Gaussian blur (MAMBO §3.3)",
    )
    parser.add_argument(
        "--resolution", default="global", choices=("global", "full"), help="global: stage 1 (paper); full: stage 3"
    )
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle trained on healthy images")
    add_sampling_arguments(
        parser,
        kind="anomaly",
        steps_help="sampler steps over the 1000-step schedule (ddpm 1000: lambda calls)",
        max_batch_help="tiles x seeds per network call",
        stitching=False,
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: settings, else auto)")
    add_acceleration_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from app.cli.superres import run_on_input
    from models.anomaly import AnomalyPipeline
    from models.anomaly_postprocess import PAPER_POST, STRONG_POST
    from models.imaging.files import atomic_write, write_npy, write_png8, write_png16
    from models.options import request_seeds
    from models.requests import AnomalyConfig

    config = AnomalyConfig(  # validated here, before the bundle loads: a bad option fails fast
        lam=args.lam,
        post=PAPER_POST if args.recipe == "paper" else STRONG_POST,
        threshold_mode=args.threshold_mode,
        threshold=args.threshold,
        resolution=args.resolution,
        options=sampling_options(args, request_seeds(args.seed, args.seeds)),
    )
    _, bundle_path, _, _, result = run_on_input(args, AnomalyPipeline, config, "anomaly-map")
    out: Path = args.out
    peak = float(result.heatmap.max())
    files = {
        "heatmap_npy": str(write_npy(out / "heatmap.npy", result.heatmap)),
        "heatmap_png": str(write_png16(out / "heatmap.png", result.heatmap / peak if peak > 0 else result.heatmap)),
        "mask": str(write_png16(out / "mask.png", result.mask.astype(np.float32))),
        "overlay": str(write_png8(out / "overlay.png", result.overlay())),
        "reconstruction": str(write_png16(out / "reconstruction.png", result.reconstruction)),
        "preprocessed": str(write_png16(out / "preprocessed.png", result.preprocessed)),
    }
    summary = {
        "input": str(args.input),
        "bundle": str(bundle_path),
        "recipe": args.recipe,
        "files": files,
        "heat_peak": round(peak, 6),
        "anomalous_pixels": int(result.mask.sum()),
        "region_pixels": int(result.region.sum()),
        **result.stats,
    }
    atomic_write(out / "anomaly.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0
