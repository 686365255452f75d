"""``bench unet``: forward passes per second of a preset U-Net, FLOPs per pass, TFLOP/s against peak.

With ``compare_reference`` the same weights and inputs also run in the reference configuration
(fp32, NCHW, eager, explicit attention), interleaved with the candidate, and each candidate row
carries the speed ratio and the max abs difference of the predicted noise.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from models.acceleration import Acceleration, dtype_name, prepare_unet
from models.benchmarks.harness import (
    count_forward_flops,
    device_peak,
    environment,
    median,
    peak_memory,
    synchronize,
    time_interleaved,
)
from models.unet import build_unet, count_parameters


def bench_unet(
    preset: str,
    batch_sizes: Sequence[int],
    acceleration: Acceleration,
    *,
    size: int = 256,
    device: str | torch.device = "cpu",
    in_channels: int = 3,
    out_channels: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    compare_reference: bool = True,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield one JSON-able row per (configuration, batch size)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    unet = build_unet(preset, in_channels, out_channels, sample_size=size)
    params = count_parameters(unet)
    flops = count_forward_flops(unet, in_channels, size)

    configs: dict[str, Acceleration] = {}
    if compare_reference and acceleration != Acceleration.reference():
        configs["reference"] = Acceleration.reference()
    configs["candidate"] = acceleration
    nets = {}
    for name, accel in configs.items():
        src = copy.deepcopy(unet) if name == "reference" else unet
        nets[name] = prepare_unet(src, accel, device)
    peaks = {name: device_peak(device, accel.dtype) for name, accel in configs.items()}
    env = environment(device)

    gen = torch.Generator().manual_seed(seed + 1)
    for batch in batch_sizes:
        x = torch.randn(batch, in_channels, size, size, generator=gen).to(device)
        t = torch.full((batch,), 500, dtype=torch.long, device=device)
        outputs: dict[str, torch.Tensor] = {}
        first_call: dict[str, float] = {}
        for name, net in nets.items():  # first call separately: includes compile / graph capture
            synchronize(device)
            start = time.perf_counter()
            outputs[name] = net(x, t).sample
            synchronize(device)
            first_call[name] = time.perf_counter() - start
        calls = {name: functools.partial(net, x, t) for name, net in nets.items()}
        times = time_interleaved(calls, device, repeats, warmup=max(0, warmup - 1))
        memory = {}
        for name, net in nets.items():
            with peak_memory(device) as mem:
                net(x, t)
            memory[name] = mem
        for name, accel in configs.items():
            seconds = median(times[name])
            achieved = flops * batch / seconds / 1e12
            peak = peaks[name]
            row: dict[str, Any] = {
                "bench": "unet",
                "config": name,
                "acceleration": accel.label,
                "preset": preset,
                "params": params,
                "size": size,
                "in_channels": in_channels,
                "batch": batch,
                "dtype": dtype_name(accel.dtype),
                "seconds_per_call": seconds,
                "seconds_all": times[name],
                "first_call_s": first_call[name],
                "passes_per_s": batch / seconds,
                "gflop_per_pass": flops / 1e9,
                "achieved_tflops": achieved,
                "peak_tflops": peak.tflops,
                "peak_source": peak.source,
                "fraction_of_peak": achieved / peak.tflops if peak.tflops else None,
                "ideal_seconds_per_call": flops * batch / (peak.tflops * 1e12) if peak.tflops else None,
                "peak_memory_bytes": memory[name].get("bytes"),
                "peak_memory_kind": memory[name].get("kind"),
                **env,
            }
            if name == "candidate" and "reference" in configs:
                ref = outputs["reference"]
                row["speedup_vs_reference"] = median(times["reference"]) / seconds
                row["max_abs_diff_vs_reference"] = (outputs[name] - ref).abs().max().item()
                row["reference_output_rms"] = ref.pow(2).mean().sqrt().item()
            yield row
