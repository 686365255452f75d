"""docker/bench_gpu.py, the prepared GPU run, runs every leg end to end in its CPU dry run (--tiny)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from models.benchmarks.report import read_rows
from tests.service_support import REDIS_URL, ROOT, redis_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_gpu_script_runs_every_leg_in_its_cpu_dry_run(tmp_path):
    redis_or_skip()  # the worker leg goes through the queue
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGEN_")}
    env |= {"OMP_NUM_THREADS": "1", "MAMMOGEN_REDIS_URL": REDIS_URL}
    out = tmp_path / "dry"
    done = subprocess.run(
        [sys.executable, "docker/bench_gpu.py", "--out", str(out), "--tiny", "--budget", "1500"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows([out / "results.jsonl"])
    assert not [r for r in rows if r["bench"] == "skipped"]
    configs = {(r["bench"], r.get("config") or r.get("setting")) for r in rows}
    assert ("unet", "bfloat16+channels_last+compile=reduce-overhead+sdpa+static-batches") in configs
    assert ("service", "bfloat16+channels_last+sdpa") in configs
    stitching = {r["stitching"] for r in rows if r["bench"] == "generate" and r.get("stage") == "total"}
    assert stitching == {"wavefront", "raster", "fused"}
    table = (out / "table.md").read_text()
    assert "### U-Net throughput" in table and "### Full image" in table and "### Through a worker process" in table
