"""Shared fixtures. Tests are specifications: each name states a behaviour."""

from __future__ import annotations

import os

# Keep CPU tests reproducible and polite on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
