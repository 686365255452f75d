"""``mammogen bench service``: the same job through the real queue to one worker process per setting,
with ratios and the pixel difference against the first setting; and the GPU run's table renderer."""

from __future__ import annotations

import json
import os
import sys

import pytest

from models.acceleration import resolve_acceleration
from models.benchmarks.report import read_rows, render
from models.options import SamplingOptions
from models.requests import GenerationRequest
from tests.service_support import REDIS_URL, ROOT
from workers.bench_service import ServiceSetting, bench_service
from workers.job_requests import GenerateJob

WORKER = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(['worker', *sys.argv[1:]]))"]


def test_a_setting_names_an_acceleration_and_optionally_the_threads():
    assert ServiceSetting.parse("auto") == ServiceSetting("auto", None)
    assert ServiceSetting.parse("float32+sdpa@2") == ServiceSetting("float32+sdpa", 2)
    assert ServiceSetting.parse("float32+sdpa@2").name == "float32+sdpa@2"


@pytest.mark.integration
def test_each_setting_runs_the_same_job_in_its_own_worker(redis_conn, mambo_bundle, tmp_path):
    options = SamplingOptions(steps=2, seeds=(4, 5), skip_background=False)
    job = GenerateJob(GenerationRequest("mambo", 64, 64, options=options), ("npy",))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGEN_")}
    env |= {"MAMMOGEN_REDIS_URL": REDIS_URL, "MAMMOGEN_MAMBO_BUNDLE": str(mambo_bundle), "PYTHONPATH": str(ROOT)}
    env |= {"MAMMOGEN_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    settings = [ServiceSetting("reference", 1), ServiceSetting("auto"), ServiceSetting("reference", 1)]
    rows = list(bench_service(redis_conn, env, WORKER, job, settings, timeout_s=300, work_dir=tmp_path))
    assert [r["setting"] for r in rows] == ["reference@1", "auto", "reference@1"]
    assert not [k for k in redis_conn.scan_iter(match="*mammogen-bench-*")]  # nothing left in Redis
    assert [r["label"] for r in rows] == [resolve_acceleration(s.acceleration, "cpu").label for s in settings]
    assert rows[0]["speedup_vs_first"] == 1.0 and rows[0]["max_abs_diff"] == 0.0
    assert rows[2]["max_abs_diff"] == 0.0  # the same setting in another process: the same pixels
    assert rows[0]["threads"] == 1 and all(r["count"] == 2 and r["ready_s"] > 0 for r in rows)
    assert rows[1]["warmed"]["mambo"]["batches"] == [1]
    # the table of the run renders every row
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = render(read_rows([out]))
    assert "### Through a worker process" in table and table.count("| reference@1 |") == 2
