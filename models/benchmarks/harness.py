"""Measurement harness: FLOPs per forward pass, timed passes, device peaks and peak memory.

Timings on a shared machine drift with the load of other processes, so comparisons run in one
process on the same weights and inputs (U-Net calls interleaved: reference, candidate, reference,
...), CPU rows are timed on process CPU time rather than wall time (see ``Timing.busy``), and the
result is a ratio; absolute seconds are context, ratios and counts are the result. FLOPs are counted
with ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (no arithmetic is done, and
every attention kernel is counted, which CPU SDPA kernels otherwise escape).
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from models.acceleration import dtype_name

#: Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets. "float32" is the
#: TF32 tensor-core peak: PyTorch runs fp32 convolutions (>99 % of U-Net FLOPs) in TF32 by default
#: on Ampere and later (``torch.backends.cudnn.allow_tf32``). Matched by substring of the CUDA
#: device name, first match wins, so more specific names come first.
KNOWN_PEAKS_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0}),
    ("H100 NVL", {"bfloat16": 835.0, "float16": 835.0, "float32": 418.0}),
    ("H100", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0}),  # SXM
    ("H200", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0}),
    ("GH200", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0}),
    ("B200", {"bfloat16": 2250.0, "float16": 2250.0, "float32": 1100.0}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}),
    ("L40S", {"bfloat16": 362.0, "float16": 362.0, "float32": 183.0}),
    ("L4", {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0}),
    ("A10", {"bfloat16": 125.0, "float16": 125.0, "float32": 62.5}),
    ("RTX 4090", {"bfloat16": 165.0, "float16": 165.0, "float32": 82.6}),
    ("V100", {"float16": 125.0, "float32": 15.7}),
    ("T4", {"float16": 65.0, "float32": 8.1}),
)


@dataclass(frozen=True)
class Peak:
    """A device's peak for one dtype; ``source`` says where the number comes from."""

    tflops: float | None
    source: str


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} cpu ({torch.get_num_threads()} threads, {cpu_capability()})"


def cpu_capability() -> str:
    caps = [torch.backends.cpu.get_cpu_capability()]
    if torch.cpu._is_avx512_bf16_supported():
        caps.append("AVX512-BF16")
    if torch.cpu._is_amx_tile_supported():
        caps.append("AMX")
    return "+".join(caps)


def known_peak(name: str, dtype: torch.dtype) -> float | None:
    for key, peaks in KNOWN_PEAKS_TFLOPS:
        if key.lower() in name.lower():
            return peaks.get(dtype_name(dtype))
    return None


def measure_conv_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Attainable TFLOP/s of a dense 3x3 convolution (best of NCHW/NHWC and two shapes, best of ``repeats``).

    The stand-in peak where no data sheet applies (CPU), timed on the same clock as the U-Net rows
    (CPU time / threads on CPU, so other processes' load does not lower it). A convolution, not a matmul, because U-Net
    FLOPs are >99 % convolutions and on some CPUs (AMD with MKL) matmul takes a much slower path
    than oneDNN's convolutions, which would make the "peak" lower than what the U-Net achieves.
    """
    best = 0.0
    for channels, side in ((256, 64), (512, 32)):  # 4.8 GFLOP each
        x = torch.randn(1, channels, side, side, device=device).to(dtype)
        w = torch.randn(channels, channels, 3, 3, device=device).to(dtype)
        flops = 2 * channels * channels * 9 * side * side
        for fmt in (torch.contiguous_format, torch.channels_last):
            xf, wf = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
            torch.nn.functional.conv2d(xf, wf, padding=1)  # warm-up: the library picks its kernel
            for _ in range(repeats):
                with clock(device) as timing:
                    torch.nn.functional.conv2d(xf, wf, padding=1)
                best = max(best, flops / timing.busy(device) / 1e12)
    return best


def device_peak(device: torch.device, dtype: torch.dtype) -> Peak:
    """Data-sheet peak for known GPUs; on CPU (no meaningful data sheet) a measured convolution peak."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        value = known_peak(name, dtype)
        return Peak(value, f"data sheet ({name})" if value else f"unknown device {name}")
    return Peak(measure_conv_tflops(device, dtype), "measured 3x3 conv (best of layouts)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_forward_flops(unet: nn.Module, in_channels: int, size: int | tuple[int, int], batch: int = 1) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass, counted on meta tensors: instant, allocation-free."""
    h, w = (size, size) if isinstance(size, int) else size
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*unet.named_parameters(remove_duplicate=False), *unet.named_buffers(remove_duplicate=False)]
    }
    x = torch.empty(batch, in_channels, h, w, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        functional_call(unet, meta, (x, t), {"return_dict": False})
    return int(counter.get_total_flops())


@dataclass
class Timing:
    """Wall seconds and process CPU seconds (all threads) of one call.

    On a shared CPU, other processes stretch wall time but not the CPU time this process spends, so
    the CPU-time ratio of two configurations is the load-robust figure there; on a GPU wall time is
    what counts (the host mostly waits).
    """

    wall: float
    cpu: float

    def busy(self, device: torch.device) -> float:
        """The seconds to report: wall on a GPU; on CPU, process CPU time / torch threads (load-robust)."""
        return self.cpu / torch.get_num_threads() if device.type == "cpu" else self.wall


def clock_name(device: torch.device) -> str:
    return "process CPU time / threads" if device.type == "cpu" else "wall (device-synchronised)"


@contextlib.contextmanager
def clock(device: torch.device) -> Iterator[Timing]:
    """Time the enclosed block (device-synchronised); the Timing is filled in on exit."""
    timing = Timing(0.0, 0.0)
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    yield timing
    synchronize(device)
    timing.wall, timing.cpu = time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, list[Timing]]:
    """Timings per call of each function, measured round-robin so load drift hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[Timing]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            with clock(device) as timing:
                fn()
            times[name].append(timing)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, int | str]]:
    """Peak memory of the enclosed block: CUDA allocator peak, or on CPU the process's peak RSS.

    The CPU figure resets the kernel's high-water mark (``/proc/self/clear_refs``) on entry, so it is
    the peak of this block for the whole process (weights included), and ``above_entry_bytes`` what the
    block added over the RSS it started with; where the reset is not allowed the lifetime peak is
    reported and ``kind`` says so.
    """
    result: dict[str, int | str] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result.update(
            kind="cuda max_memory_allocated",
            bytes=torch.cuda.max_memory_allocated(device),
            reserved_bytes=torch.cuda.max_memory_reserved(device),
        )
        return
    kind = "cpu peak RSS (VmHWM)"
    entry = _vm_status_bytes("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        kind = "cpu lifetime peak RSS (VmHWM not resettable)"
    yield result
    peak = _vm_status_bytes("VmHWM:")
    result.update(kind=kind, bytes=peak, above_entry_bytes=max(0, peak - entry))


def _vm_status_bytes(field: str) -> int:
    """A /proc/self/status memory field in bytes (ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def environment(device: torch.device) -> dict[str, Any]:
    """What a measurement ran on, recorded beside it."""
    import diffusers

    env: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["driver"] = _nvidia_driver()
    return env


def _nvidia_driver() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
