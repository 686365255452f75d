"""Shared fixtures. Tests are specifications: each name states a behaviour."""

from __future__ import annotations

import os

# One intra-op thread for the test process and every worker subprocess it starts: the tiny test
# models gain nothing from two, and on a busy 2-core machine two OpenMP threads spin against each
# other (a small generation measured 79 s with 2 threads vs 2 s with 1).
os.environ["OMP_NUM_THREADS"] = os.environ.get("MAMMOGEN_TEST_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

import torch  # after the thread environment is set

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Fixtures every test module may ask for by name: real Redis (DB 13), tiny random bundles, a private Orthanc.
from tests.pacs_support import orthanc  # noqa: E402, F401
from tests.service_support import dualview_bundle, mambo_bundle, redis_conn  # noqa: E402, F401
