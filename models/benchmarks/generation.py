"""``bench generate``: one full image per configuration, timed stage by stage, against the reference.

The reference configuration is the reference code's algorithm and arithmetic: raster order, one tile
per model call, fp32 NCHW eager networks with explicit attention, on the same weights, sampler, steps
and seed. It runs in the same process right after the candidate, and the comparison row carries the
speed ratio and the pixel difference of the two images (zero up to arithmetic for an exact reordering
such as wavefront; a real difference for the approximate fused mode).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.acceleration import Acceleration, dtype_name, prepare_unet
from models.benchmarks.harness import (
    Peak,
    clock,
    clock_name,
    count_forward_flops,
    device_peak,
    environment,
    peak_memory,
)
from models.geometry import MamboGeometry
from models.mambo import STAGES, MamboPipeline, random_mambo_networks
from models.options import SamplingOptions, request_seeds
from models.schedulers import NOISE_SCHEDULE


@dataclass
class Networks:
    """The three fp32 networks and what the pipeline needs besides them; copied per configuration."""

    nets: dict[str, nn.Module]
    geometry: MamboGeometry
    schedule: dict[str, Any]
    source: str


def load_networks(
    bundle: str | Path | None, preset: str | None, patch: int | None, seed: int = 0, overlap: int | None = None
) -> Networks:
    """Networks from a bundle, or random-weight ones of a preset (speed only: the image is noise-like)."""
    if bundle is not None:
        pipe = MamboPipeline.from_bundle(bundle, "cpu", torch.float32)  # the one bundle loader
        nets = {"global": pipe.global_unet, "local": pipe.local_unet, "patch": pipe.patch_unet}
        return Networks(nets, pipe.geometry, pipe.schedule, f"bundle {pipe.name} {pipe.version}")
    from models.unet import UNET_PRESETS

    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
    s = patch or UNET_PRESETS[preset].sample_size
    geometry = MamboGeometry(s=s, overlap=s // 8 if overlap is None else overlap)  # the paper's 32 px of 256
    nets = random_mambo_networks(preset, s, seed)
    return Networks(nets, geometry, dict(NOISE_SCHEDULE), f"random {preset} s={s}")


def build_pipeline(networks: Networks, acceleration: Acceleration, device: torch.device) -> MamboPipeline:
    """A pipeline over private copies of the networks, prepared with ``acceleration``."""
    prepared = [prepare_unet(copy.deepcopy(networks.nets[n]), acceleration, device) for n in STAGES]
    return MamboPipeline(*prepared, schedule=networks.schedule, geometry=networks.geometry)


def run_stages(
    pipe: MamboPipeline,
    height: int,
    width: int,
    opts: SamplingOptions,
    device: torch.device,
    lockstep: bool = True,
) -> tuple[list[np.ndarray], dict[str, dict[str, Any]]]:
    """The three stages one after the other, each under its own clock and memory peak.

    lockstep: all images' tiles share every model call (the pipeline's batched stage methods);
    otherwise one image after the other, as the reference code runs them.
    """
    plan = pipe.plan(height, width)
    rows: dict[str, dict[str, Any]] = {}
    seeds = opts.seeds
    groups = [seeds] if lockstep else [(seed,) for seed in seeds]

    def timed(stage: str, fn: Any) -> Any:
        with clock(device) as timing, peak_memory(device) as mem:
            out, stats = fn()
        row = {
            **stats.to_dict(),
            "seconds": timing.busy(device),
            "wall_seconds": timing.wall,
            "cpu_seconds": timing.cpu,
            "memory": mem,
        }
        if stage in rows:  # another image of a one-by-one run: costs add up, memory peaks do not
            prev = rows[stage]
            for key in (
                "tiles",
                "skipped",
                "model_evaluations",
                "sequential_calls",
                "batches",
            ):
                row[key] += prev[key]
            row["memory"] = max(prev["memory"], mem, key=lambda m: int(m.get("bytes", 0)))
        rows[stage] = row
        return out

    images: list[np.ndarray] = []
    for group in groups:
        spec = pipe.spec(replace(opts, seeds=group))
        globals_ = timed("global", lambda spec=spec: pipe.generate_global_batch(spec))
        mids = timed("local", lambda spec=spec, g=globals_: pipe.generate_mid_batch(g, plan, spec))
        images += timed("patch", lambda spec=spec, g=globals_, m=mids: pipe.generate_full_batch(g, m, plan, spec))
    return images, rows


def bench_generate(
    *,
    bundle: str | Path | None = None,
    preset: str | None = None,
    height: int = 512,
    width: int = 512,
    patch: int | None = None,
    steps: int = 10,
    sampler: str = "ddim",
    eta: float = 0.0,
    stitching: str = "wavefront",
    max_batch: int = 64,
    acceleration: Acceleration | None = None,
    reference: bool = True,
    skip_background: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
    warmup: bool = False,
    save_dir: str | Path | None = None,
    measure_peak: bool = True,
    images: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield per-stage rows and a total row for the candidate (and the reference), then a comparison row.

    ``images`` > 1: the candidate denoises that many seeds in lock-step (their tiles share calls),
    the reference makes them one after the other.
    """
    device = torch.device(device)
    acceleration = acceleration or Acceleration()
    networks = load_networks(bundle, preset, patch, seed)
    s = networks.geometry.s
    # input channels from each network (aligned conditioning adds one to stages 2 and 3)
    flops = {n: count_forward_flops(networks.nets[n], int(networks.nets[n].config.in_channels), s) for n in STAGES}
    env = environment(device)
    configs = {"candidate": (acceleration, stitching, max_batch)}
    if reference:
        configs["reference"] = (Acceleration.reference(), "raster", 1)
    seeds = request_seeds(seed, images)
    outputs: dict[str, list[np.ndarray]] = {}
    totals: dict[str, dict[str, Any]] = {}
    for name, (accel, mode, chunk) in configs.items():
        pipe = build_pipeline(networks, accel, device)
        _warm(pipe, device)
        opts = SamplingOptions(sampler, steps, eta, mode, chunk, seeds, skip_background)
        if warmup and name == "candidate":  # compile / CUDA-graph capture / cuDNN autotune, reported apart
            start = time.perf_counter()
            run_stages(pipe, height, width, opts, device)
            yield {"bench": "generate", "config": name, "stage": "warmup", "seconds": time.perf_counter() - start}
        outputs[name], stages = run_stages(pipe, height, width, opts, device, lockstep=name == "candidate")
        peak = device_peak(device, accel.dtype) if measure_peak or device.type == "cuda" else Peak(None, "not measured")
        common = {
            "bench": "generate",
            "config": name,
            "acceleration": accel.label,
            "stitching": mode,
            "max_batch": chunk,
            "networks": networks.source,
            "height": height,
            "width": width,
            "patch": s,
            "sampler": sampler,
            "steps": steps,
            "seed": seed,
            "images": images,
            "skip_background": skip_background,
            "dtype": dtype_name(accel.dtype),
            "clock": clock_name(device),
            **env,
        }
        for stage, row in stages.items():
            yield {**common, "stage": stage, **_costs(row, flops[stage], peak)}
        total = {
            "seconds": sum(r["seconds"] for r in stages.values()),
            "wall_seconds": sum(r["wall_seconds"] for r in stages.values()),
            "cpu_seconds": sum(r["cpu_seconds"] for r in stages.values()),
            "tiles": sum(r["tiles"] for r in stages.values()),
            "skipped": sum(r["skipped"] for r in stages.values()),
            "model_evaluations": sum(r["model_evaluations"] for r in stages.values()),
            "sequential_calls": sum(r["sequential_calls"] for r in stages.values()),
            "gflop": sum(r["model_evaluations"] * flops[n] for n, r in stages.items()) / 1e9,
            "peak_memory_bytes": max(int(r["memory"].get("bytes", 0)) for r in stages.values()),
            "peak_memory_kind": stages["patch"]["memory"].get("kind"),
        }
        total["achieved_tflops"] = total["gflop"] / 1e3 / total["seconds"]
        total["peak_tflops"], total["peak_source"] = peak.tflops, peak.source
        total["ideal_seconds"] = total["gflop"] / 1e3 / peak.tflops if peak.tflops else None
        totals[name] = total
        yield {**common, "stage": "total", **total}
        del pipe
    if save_dir is not None:
        _save(Path(save_dir), {name: imgs[0] for name, imgs in outputs.items()})
    if "reference" in totals:
        yield _comparison(totals, outputs, stitching, acceleration)


def _warm(pipe: MamboPipeline, device: torch.device) -> None:
    """One batch-1 forward per network, so lazy library initialisation is not billed to stage 1."""
    s = pipe.geometry.s
    for net in (pipe.global_unet, pipe.local_unet, pipe.patch_unet):
        net(torch.zeros(1, int(net.config.in_channels), s, s, device=device), torch.tensor(500, device=device))


def _costs(row: dict[str, Any], flops_per_pass: int, peak: Peak) -> dict[str, Any]:
    gflop = row["model_evaluations"] * flops_per_pass / 1e9
    mem = row["memory"]
    out = {
        **{k: v for k, v in row.items() if k != "memory"},
        "gflop": gflop,
        "achieved_tflops": gflop / 1e3 / row["seconds"] if row["seconds"] else None,
    }
    out["ideal_seconds"] = gflop / 1e3 / peak.tflops if peak.tflops else None
    out["peak_memory_bytes"], out["peak_memory_kind"] = mem.get("bytes"), mem.get("kind")
    return out


def _comparison(
    totals: dict[str, dict[str, Any]], outputs: dict[str, list[np.ndarray]], stitching: str, accel: Acceleration
) -> dict[str, Any]:
    cand, ref = np.stack(outputs["candidate"]), np.stack(outputs["reference"])
    diff = np.abs(cand.astype(np.float64) - ref.astype(np.float64))
    mse = float((diff**2).mean())
    over = float((diff > 1.0 / 256).mean())
    return {
        "bench": "generate",
        "stage": "comparison",
        "candidate": f"{stitching} {accel.label}",
        "reference": "raster batch-1 float32+explicit-attn, one image at a time",
        "images": len(outputs["candidate"]),
        "speedup_vs_reference": totals["reference"]["seconds"] / totals["candidate"]["seconds"],
        "speedup_wall_vs_reference": totals["reference"]["wall_seconds"] / totals["candidate"]["wall_seconds"],
        "sequential_calls_ratio": totals["reference"]["sequential_calls"]
        / max(1, totals["candidate"]["sequential_calls"]),
        "evaluations": {k: v["model_evaluations"] for k, v in totals.items()},
        "exact_reordering": stitching in ("raster", "wavefront"),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "fraction_pixels_off_by_over_1_256": over,
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
        "image_range": "[0, 1]",
    }


def _save(out: Path, images: dict[str, np.ndarray]) -> None:
    from models.imaging.files import write_png8, write_png16

    for name, image in images.items():
        write_png16(out / f"{name}.png", image)
    if {"candidate", "reference"} <= images.keys():
        diff = np.abs(images["candidate"] - images["reference"])
        write_png8(out / "abs_diff_x10.png", np.clip(diff * 10.0, 0.0, 1.0))
