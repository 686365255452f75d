"""The worker runs the optimised path: every network in the configured acceleration, warmed (compiled)
before the worker reports ready, the configuration named in every job summary, images in lock-step."""

from __future__ import annotations

import json

import pytest
import torch
from rq import Queue

from app.settings import Settings
from models.acceleration import PreparedUNet, networks_of, resolve_acceleration
from models.options import SamplingOptions
from models.requests import GenerationRequest
from tests.service_support import WorkerProcess, purge_queue, settings_for, unique_queue, wait_for
from workers.job_requests import GenerateJob
from workers.queueing import SERIALIZER, worker_alive_key
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.submit import Submitter
from workers.worker import MammogenWorker

pytestmark = pytest.mark.integration


def _job(model: str, count: int, steps: int = 2, max_batch: int = 16) -> GenerateJob:
    seeds = tuple(range(3, 3 + count))
    options = SamplingOptions(steps=steps, seeds=seeds, max_batch=max_batch, skip_background=False)
    size = {"height": 64, "width": 48} if model == "mambo" else {}
    return GenerateJob(GenerationRequest(model, options=options, **size), ("npy",))


def _run(redis_conn, tmp_path, bundles, jobs, acceleration="auto", warmup_max_batch=16):
    """Queue ``jobs``, run them with one in-process worker; returns (runtime, their summaries)."""
    name = unique_queue("accel")
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    try:
        sub = Submitter(queue, max_queue_length=10, result_ttl_s=600, retries=0)
        ids = [sub.submit(job, timeout_s=600).job_id for job in jobs]
        runtime = WorkerRuntime(
            ResultStore(tmp_path), bundles, acceleration=acceleration, warmup_max_batch=warmup_max_batch
        )
        assert MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1).work(burst=True)
        done = [queue.fetch_job(i) for i in ids]
        assert all(j.is_finished for j in done), [j.meta.get("error") for j in done]
        return runtime, [j.return_value()["summary"] for j in done]
    finally:
        purge_queue(redis_conn, name)


@pytest.mark.parametrize("setting", ["auto", "reference", "bfloat16+channels_last+sdpa"])
def test_every_job_summary_names_the_acceleration_its_networks_ran_in(
    redis_conn, tmp_path, mambo_bundle, dualview_bundle, setting
):
    bundles = {"mambo": mambo_bundle, "dualview": dualview_bundle}
    runtime, summaries = _run(redis_conn, tmp_path, bundles, [_job("mambo", 1), _job("dualview", 1)], setting)
    expected = resolve_acceleration(setting, "cpu")
    for summary in summaries:
        accel = summary["acceleration"]
        assert (accel["setting"], accel["label"], accel["device"]) == (setting, expected.label, "cpu")
        assert accel["config"]["dtype"] == str(expected.dtype).removeprefix("torch.")
        assert accel["threads"] == torch.get_num_threads()
    # and the networks really run so: weights cast, one wrapper per network
    for pipe in (runtime.mambo(), runtime.dualview()):
        nets = networks_of(pipe)
        assert nets and all(isinstance(n, PreparedUNet) and n.acceleration == expected for n in nets.values())
        assert {next(n.unet.parameters()).dtype for n in nets.values()} == {expected.dtype}


def test_a_job_of_several_images_denoises_them_in_lock_step(redis_conn, tmp_path, mambo_bundle, dualview_bundle):
    bundles = {"mambo": mambo_bundle, "dualview": dualview_bundle}
    jobs = [_job("mambo", 1), _job("mambo", 3), _job("dualview", 1), _job("dualview", 3)]
    _, (one, three, pair, pairs) = _run(redis_conn, tmp_path, bundles, jobs)
    # MAMBO: the images' tiles share every call: the same sequential depth, three times the evaluations
    assert three["stats"]["images"] == 3
    assert three["stats"]["sequential_calls"] == one["stats"]["sequential_calls"]
    assert three["stats"]["model_evaluations"] == 3 * one["stats"]["model_evaluations"]
    # dual-view: the three pairs in one batch per step
    assert pairs["stats"]["sequential_model_calls"] == pair["stats"]["sequential_model_calls"] == 2
    assert pairs["stats"]["model_evaluations"] == 3 * pair["stats"]["model_evaluations"]


def test_the_worker_reports_ready_only_after_its_networks_are_warmed(redis_conn, tmp_path, mambo_bundle):
    """/readyz counts a worker once its alive key exists; the first record it ever writes must already
    show every loaded pipeline warmed (in a compiling configuration: every batch bucket compiled)."""
    name = unique_queue("warm")
    settings = settings_for(tmp_path, name, mambo_bundle=mambo_bundle, warmup_max_batch=4)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        key = worker_alive_key(worker.name)
        first = wait_for(lambda: redis_conn.get(key), 180, interval=0.02, what=f"worker alive\n{worker.log()}")
        accel = json.loads(first)["acceleration"]
        assert accel["setting"] == "auto" and accel["label"] == resolve_acceleration("auto", "cpu").label
        assert accel["warmed"]["mambo"]["size"] == [32, 32] and accel["warmed"]["mambo"]["batches"] == [1]
        assert accel["threads"] == Settings(torch_threads=0).worker_threads()  # cores - 1, not OMP_NUM_THREADS
    finally:
        worker.stop()
        purge_queue(redis_conn, name)


def test_a_bundle_with_a_lesion_network_loads_and_warms(tmp_path):
    """`mammogen worker` loads every bundle at start-up (`load_all`); a MAMBO bundle with a lesion network
    (class-conditional) failed its warm-up and left the worker without MAMBO (found by schemathesis)."""
    from models.bundle import create_random_bundle

    bundle = create_random_bundle(tmp_path / "b", preset="tiny", lesion_network=True, conditioning="aligned")
    runtime = WorkerRuntime(ResultStore(tmp_path / "r"), {"mambo": bundle}, acceleration="auto")
    runtime.load_all()
    assert runtime.acceleration_info()["warmed"]["mambo"]["batches"] == [1]
    assert "lesion_unet" in networks_of(runtime.mambo()) and runtime.lesion_inserter().kinds


@pytest.mark.slow
def test_compiled_batch_buckets_are_built_before_ready_and_reused_by_jobs(redis_conn, tmp_path, mambo_bundle):
    """With torch.compile (here on CPU, inductor), warming compiles every power-of-two bucket up to
    ``warmup_max_batch``; a job whose waves fit those buckets compiles nothing more."""
    from torch._dynamo.utils import counters

    setting = "float32+compile=default+sdpa+static-batches"
    runtime = WorkerRuntime(ResultStore(tmp_path), {"mambo": mambo_bundle}, acceleration=setting, warmup_max_batch=4)
    runtime.load_all()  # what MammogenWorker.work does before its first heartbeat
    assert runtime.acceleration_info()["warmed"]["mambo"]["batches"] == [1, 2, 4]
    compiled = counters["stats"]["unique_graphs"]
    assert compiled >= 3  # at least one graph per bucket
    name = unique_queue("compiled")
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    try:
        Submitter(queue, max_queue_length=10, result_ttl_s=600, retries=0).submit(
            _job("mambo", 2, max_batch=4), timeout_s=1200
        )
        assert MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1).work(burst=True)
    finally:
        purge_queue(redis_conn, name)
    assert counters["stats"]["unique_graphs"] == compiled
