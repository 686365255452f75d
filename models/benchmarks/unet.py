"""``bench unet``: forward passes per second of a preset U-Net, FLOPs per pass, TFLOP/s against peak.

With ``compare_reference`` the same weights and inputs also run in the reference configuration
(fp32, NCHW, eager, explicit attention), interleaved with the candidate, and each candidate row
carries the speed ratio and the max abs difference of the predicted noise.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from models.acceleration import Acceleration, dtype_name, prepare_unet
from models.benchmarks.harness import (
    Peak,
    clock,
    clock_name,
    count_forward_flops,
    device_peak,
    environment,
    median,
    peak_memory,
    time_interleaved,
)
from models.unet import build_unet, count_parameters


def bench_unet(
    preset: str,
    batch_sizes: Sequence[int],
    acceleration: Acceleration | dict[str, Acceleration],
    *,
    size: int = 256,
    device: str | torch.device = "cpu",
    in_channels: int = 3,
    out_channels: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    compare_reference: bool = True,
    measure_peak: bool = True,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield one JSON-able row per (configuration, batch size).

    ``acceleration`` is one candidate, or several by name (an ablation: each switch on its own);
    all of them and the reference run interleaved on copies of the same weights and inputs.
    ``measure_peak=False`` skips the CPU peak measurement (a few seconds) and reports no peak.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    unet = build_unet(preset, in_channels, out_channels, sample_size=size)
    params = count_parameters(unet)
    flops = count_forward_flops(unet, in_channels, size)

    candidates = acceleration if isinstance(acceleration, dict) else {"candidate": acceleration}
    configs: dict[str, Acceleration] = {}
    if compare_reference and Acceleration.reference() not in candidates.values():
        configs["reference"] = Acceleration.reference()
    configs.update(candidates)
    nets = {name: prepare_unet(copy.deepcopy(unet), accel, device) for name, accel in configs.items()}
    del unet
    peak_of: dict[torch.dtype, Peak] = {}
    for accel in configs.values():
        if accel.dtype not in peak_of:
            measured = measure_peak or device.type == "cuda"
            peak_of[accel.dtype] = device_peak(device, accel.dtype) if measured else Peak(None, "not measured")
    peaks = {name: peak_of[accel.dtype] for name, accel in configs.items()}
    env = environment(device)

    gen = torch.Generator().manual_seed(seed + 1)
    for batch in batch_sizes:
        x = torch.randn(batch, in_channels, size, size, generator=gen).to(device)
        t = torch.full((batch,), 500, dtype=torch.long, device=device)
        outputs: dict[str, torch.Tensor] = {}
        first_call: dict[str, float] = {}
        for name, net in nets.items():  # first call separately: includes compile / graph capture
            with clock(device) as timing:
                outputs[name] = net(x, t).sample
            first_call[name] = timing.wall
        calls = {name: functools.partial(net, x, t) for name, net in nets.items()}
        times = time_interleaved(calls, device, repeats, warmup=max(0, warmup - 1))
        memory = {}
        for name, net in nets.items():
            with peak_memory(device) as mem:
                net(x, t)
            memory[name] = mem
        for name, accel in configs.items():
            seconds = median([tm.busy(device) for tm in times[name]])
            wall_seconds = median([tm.wall for tm in times[name]])
            cpu_seconds = median([tm.cpu for tm in times[name]])
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
                "clock": clock_name(device),
                "seconds_per_call": seconds,
                "wall_seconds_per_call": wall_seconds,
                "cpu_seconds_per_call": cpu_seconds,
                "seconds_all": [round(tm.wall, 4) for tm in times[name]],
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
            if name != "reference" and "reference" in configs:
                ref = outputs["reference"]
                row["speedup_vs_reference"] = median([tm.busy(device) for tm in times["reference"]]) / seconds
                row["speedup_wall_vs_reference"] = median([tm.wall for tm in times["reference"]]) / wall_seconds
                row["max_abs_diff_vs_reference"] = (outputs[name] - ref).abs().max().item()
                row["reference_output_rms"] = ref.pow(2).mean().sqrt().item()
            yield row
