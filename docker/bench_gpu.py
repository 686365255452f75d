"""The GPU performance run in one command (at most ~8 minutes on one H100/H200), from the repository root:

    python docker/bench_gpu.py --out bench-gpu            # CUDA: the paper preset, 3840x3840
    python docker/bench_gpu.py --out bench-dry --tiny     # CPU dry run: tiny networks, same legs

Each leg is one `mammogen` process (a fresh CUDA context and allocator, so peak memory is the leg's own)
that appends JSON lines to OUT/results.jsonl; OUT/table.md is rendered from those lines
(`models.benchmarks.report`). Legs, most important first, each within what is left of ``--budget``:

1. U-Net throughput, paper preset at 256x256, batch 1/8/32/64: fp32 reference vs bf16 + channels_last
   (eager), interleaved; TFLOP/s and the fraction of the data-sheet peak.
2. One 3840x3840 image, random paper-size weights, DPM-Solver++ 20 steps: wavefront (bf16 +
   channels_last, batch <= 64, cuDNN autotuned in a warm-up run reported apart) against the reference
   configuration (raster, batch 1, fp32, explicit attention) on the same weights and seed: time, peak
   memory, the pixel difference.
3. The same image fused (MultiDiffusion-style, 3 stages x batch <= 64 per step).
4. The same request through a real worker process (`mammogen bench service`: submit, wait, time).
5. bf16 + torch.compile (CUDA graphs, static batch buckets) at the same batch sizes as leg 1; the
   first-call column is the compile time of each bucket. Last because compilation is the long part.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"]
BF16 = "bfloat16+channels_last+sdpa"
BF16_COMPILED = "bfloat16+channels_last+compile=reduce-overhead+sdpa+static-batches"


def legs(out: Path, tiny: bool) -> list[tuple[str, list[str], float]]:
    """(name, mammogen argv, seconds it may take) of each leg; ``tiny``: the CPU dry run's sizes."""
    results = str(out / "results.jsonl")
    bundle = str(out / "bundle")
    device = "cpu" if tiny else "cuda"
    preset, size, batches = ("tiny", "32", "1,2") if tiny else ("paper", "256", "1,8,32,64")
    side, steps, max_batch = ("96", "2", "4") if tiny else ("3840", "20", "64")
    image = ["--height", side, "--width", side, "--steps", steps, "--sampler", "dpmsolver", "--max-batch", max_batch]
    unet = ["bench", "unet", "--preset", preset, "--size", size, "--batch-sizes", batches, "--device", device]
    unet += ["--repeats", "3" if tiny else "10", "--out", results, *(["--threads", "1"] if tiny else [])]
    generate = ["bench", "generate", "--bundle", bundle, *image, "--no-skip-background", "--device", device]
    generate += ["--optimised", "--no-compile", "--out", results, *(["--threads", "1"] if tiny else [])]
    service = ["bench", "service", "--model", "mambo", "--bundle", bundle, *image, "--stitching", "wavefront"]
    service += ["--device", device]
    return [
        ("unet eager", [*unet, "--configs", BF16], 90),
        ("bundle", ["bundle", "create", "--preset", preset, "--random", "--out", bundle, "--overwrite"], 60),
        ("image wavefront vs reference", [*generate, "--stitching", "wavefront", "--warmup", "--reference"], 240),
        ("image fused", [*generate, "--stitching", "fused", "--warmup"], 90),
        ("image through a worker", [*service, "--settings", BF16, "--timeout", "400", "--out", results], 150),
        ("unet compiled", [*unet, "--configs", BF16_COMPILED], 240),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-gpu"), help="results folder")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with tiny networks and sizes")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all legs together")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    results.unlink(missing_ok=True)
    deadline = time.monotonic() + args.budget
    status = 0
    for name, argv_leg, limit in legs(args.out, args.tiny):
        left = deadline - time.monotonic()
        if left < 15:
            _skip(results, name, f"no time left of the {args.budget:.0f} s budget")
            continue
        t0 = time.monotonic()
        print(f"== {name} (up to {min(limit, left):.0f} s)", file=sys.stderr, flush=True)
        with (args.out / f"{name.replace(' ', '_')}.log").open("w") as log:
            rc = _run([*CLI, *argv_leg], log, min(limit, left))
        print(f"   {name}: rc {rc}, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        if rc != 0:
            status = 1
            _skip(results, name, "timed out" if rc is None else f"exit code {rc}, see {name.replace(' ', '_')}.log")
    sys.path.insert(0, str(ROOT))
    from models.benchmarks.report import read_rows, render

    table = render(read_rows([results]))
    (args.out / "table.md").write_text(table)
    print(table)
    return status


def _run(argv: list[str], log: Any, timeout: float) -> int | None:
    """Run one leg in its own process group; on timeout the whole group goes (the worker processes that
    `bench service` starts included), so no leg leaves anything holding the GPU. None: timed out."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return None


def _skip(results: Path, leg: str, why: str) -> None:
    with results.open("a") as fh:
        fh.write(json.dumps({"bench": "skipped", "leg": leg, "why": why}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
