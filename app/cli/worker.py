"""``mammogen worker``: one worker process (one per GPU) that loads the bundles once and takes jobs.

Run several, on several hosts, against one Redis and one shared result volume to scale out.
Pin a GPU with ``--device cuda:1`` or ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import argparse
import logging

from app.settings import get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: MAMMOGEN_DEVICE)")
    parser.add_argument("--queue", default=None, help="queue to serve (default: MAMMOGEN_QUEUE_NAME)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: MAMMOGEN_REDIS_URL)")
    parser.add_argument("--name", default=None, help="worker name (default: host-pid)")


def run(args: argparse.Namespace) -> int:
    import torch

    from workers.queueing import DEFAULT_REDIS_URL, connect, priority_queues, wait_for_redis
    from workers.runtime import WorkerRuntime
    from workers.store import ResultStore
    from workers.worker import MammogenWorker, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    torch.set_num_threads(settings.worker_threads())  # one OpenMP team that cannot thrash itself
    connection = connect(args.redis_url or settings.redis_url or DEFAULT_REDIS_URL)
    wait_for_redis(connection, logging.getLogger("mammogen.worker"), "; the worker starts once it answers")
    runtime = WorkerRuntime(
        store=ResultStore(settings.result_dir),
        bundle_paths={kind: settings.bundle_path(kind) for kind in ("mambo", "dualview")},
        device=args.device or settings.device,
        dtype=settings.dtype,
        acceleration=settings.acceleration,
        warmup_max_batch=settings.warmup_max_batch,
        pacs=dict(settings.pacs),
        delivery=settings.delivery_policy(),
    )
    extra = {"name": args.name} if args.name else {}
    worker = MammogenWorker(
        priority_queues(connection, args.queue or settings.queue_name),  # high, normal, low: drained in order
        connection=connection,
        runtime=runtime,
        heartbeat_s=settings.heartbeat_s,
        default_result_ttl=settings.result_ttl_s,
        **extra,
    )
    return run_worker(worker, burst=args.burst)
