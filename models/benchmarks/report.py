"""Markdown tables from ``mammogen bench`` JSON lines (U-Net throughput, full images, the served path).

`docker/bench_gpu.py` writes its results as JSON lines and renders them here, so the table in
docs/PERFORMANCE.md is produced from the rows, never retyped. Torch-free.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip().startswith("{"):
                rows.append(json.loads(line))
    return rows


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** (-digits) or value == 0 else f"{value:.1e}"
    return str(value)


def _gb(nbytes: Any) -> str:
    return "–" if not nbytes else f"{int(nbytes) / 2**30:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def unet_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            r["acceleration"],
            str(r["batch"]),
            _f(r["seconds_per_call"] * 1e3, 1),
            _f(r["passes_per_s"], 1),
            _f(r["achieved_tflops"], 1),
            _f(r.get("peak_tflops"), 0),
            _f(r.get("fraction_of_peak")),
            _f(r.get("speedup_vs_reference", 1.0)),
            _f(r.get("first_call_s"), 1),
            _gb(r.get("peak_memory_bytes")),
            _f(r.get("max_abs_diff_vs_reference"), 3),
        ]
        for r in rows
        if r.get("bench") == "unet"
    ]
    header = ["config", "batch", "ms / call", "passes / s", "TFLOP/s", "peak", "of peak", "vs fp32", "first call s"]
    return _table([*header, "peak mem GiB", "max abs diff"], body)


def generate_table(rows: list[dict[str, Any]]) -> str:
    totals = [r for r in rows if r.get("bench") == "generate" and r.get("stage") == "total"]
    ref = next((r for r in totals if r["config"] == "reference"), None)
    comparisons = [r for r in rows if r.get("bench") == "generate" and r.get("stage") == "comparison"]
    body = []
    for r in totals:
        versus = ref["seconds"] / r["seconds"] if ref and r["seconds"] else None
        mine = [c for c in comparisons if r["config"] == "candidate" and c["candidate"].startswith(r["stitching"])]
        comparison = mine[0] if mine else {}
        body.append(
            [
                f"{r['stitching']}, batch ≤ {r['max_batch']}, {r['acceleration']}",
                f"{r['height']}x{r['width']}",
                f"{r['sampler']} {r['steps']}",
                _f(r["seconds"], 1),
                str(r["sequential_calls"]),
                str(r["model_evaluations"]),
                _f(r["achieved_tflops"], 1),
                _gb(r.get("peak_memory_bytes")),
                _f(versus),
                _f(comparison.get("psnr_db"), 1),
            ]
        )
    header = ["configuration", "size", "sampler", "seconds", "sequential calls", "evaluations", "TFLOP/s"]
    return _table([*header, "peak mem GiB", "vs reference", "PSNR vs reference dB"], body)


def service_table(rows: list[dict[str, Any]], in_process: dict[str, Any] | None = None) -> str:
    body = [
        [
            r["setting"],
            r["label"],
            str(r["threads"]),
            f"{r['height']}x{r['width']}" if r.get("height") else r["model"],
            f"{r['sampler']} {r['steps']}",
            _f(r["ready_s"], 1),
            _f(r["seconds"], 2),
            _f(r["job_s"], 2),
            _f(r["speedup_vs_first"]),
            _f(r.get("cpu_speedup_vs_first")),
            _f(r.get("mean_abs_diff"), 4),
            _f(r.get("psnr_db"), 1),
            _f(in_process["seconds"] / r["seconds"]) if in_process else "–",
        ]
        for r in rows
        if r.get("bench") == "service"
    ]
    header = ["setting", "label", "threads", "size", "sampler", "ready s", "submit→done s", "job s", "speed-up"]
    return _table([*header, "CPU speed-up", "mean abs diff", "PSNR dB", "in-process / served"], body)


def _pm(row: dict[str, Any], key: str, digits: int = 2) -> str:
    if row.get(key) is None:
        return "–"
    sd = row.get(f"{key}_sd")
    return _f(row[key], digits) + (f" ± {sd:.{digits}f}" if sd is not None else "")


def steps_table(rows: list[dict[str, Any]]) -> str:
    """One line per (job kind, setting) of ``bench steps``' summary rows: cost, time, seams, distance."""
    body = []
    for r in rows:
        if r.get("bench") != "steps" or r.get("row") != "summary":
            continue
        body.append(
            [
                r["model"],
                r["setting"],
                str(r["items"]),
                _f(r.get("model_evaluations"), 0),
                _f(r.get("seconds"), 2),
                _f(r.get("speedup_vs_baseline")),
                _pm(r, "seam_ratio", 3),
                _pm(r, "psnr_db_to_baseline", 1),
                _pm(r, "ssim_to_baseline", 3),
                _f(r.get("mean_abs_diff_to_baseline"), 4),
                _pm(r, "psnr_breast_to_truth", 2) if "psnr_breast_to_truth" in r else _pm(r, "third_channel_error", 4),
            ]
        )
    header = ["job kind", "setting", "items", "evaluations / item", "s / item", "speed-up", "seam ratio"]
    return _table(
        [*header, "PSNR to baseline dB", "SSIM to baseline", "mean abs diff", "PSNR to truth dB / B error"], body
    )


def render(rows: list[dict[str, Any]]) -> str:
    parts = []
    if any(r.get("bench") == "steps" for r in rows):
        parts += ["### Fewer steps", "", steps_table(rows), ""]
    if any(r.get("bench") == "unet" for r in rows):
        parts += ["### U-Net throughput", "", unet_table(rows), ""]
    if any(r.get("bench") == "generate" for r in rows):
        parts += ["### Full image", "", generate_table(rows), ""]
    if any(r.get("bench") == "service" for r in rows):
        totals = [r for r in rows if r.get("bench") == "generate" and r.get("stage") == "total"]
        cand = next((r for r in totals if r["config"] == "candidate" and r["stitching"] == "wavefront"), None)
        parts += ["### Through a worker process", "", service_table(rows, cand), ""]
    for r in rows:
        if r.get("bench") == "skipped":
            parts.append(f"- skipped: {r['leg']} ({r['why']})")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":  # python -m models.benchmarks.report FILE.jsonl ... > table.md
    sys.stdout.write(render(read_rows(sys.argv[1:])))
