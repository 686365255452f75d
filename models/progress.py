"""Progress and cancel travel down as callbacks; no layer reaches back up.

A pipeline calls ``reporter.step(stage, step, total)`` after every denoising step. That reports
progress (stage, step, overall fraction) to an optional callback and checks the cancel flag,
raising :class:`models.errors.CancelledError` so a cancelled job stops within one step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    stage: str  # e.g. "global", "local", "patch", "dualview", "anomaly"
    step: int  # denoising steps done in this stage (1-based after the first step)
    total: int  # denoising steps of this stage (summed over its waves/chunks)
    fraction: float  # overall job fraction in [0, 1]
    elapsed_s: float
    eta_s: float | None  # linear extrapolation of the overall fraction


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


@dataclass
class Reporter:
    """Turns per-stage steps into overall progress; stage weights are their expected model-call counts."""

    callback: ProgressFn | None = None
    cancel: CancelFn | None = None
    stage_weights: dict[str, float] = field(default_factory=dict)
    _done_weight: float = 0.0
    _t0: float = field(default_factory=time.monotonic)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("job cancelled by the user")

    def step(self, stage: str, step: int, total: int) -> None:
        """Call after each denoising step of ``stage``; raises CancelledError when cancel() is true."""
        total_w = sum(self.stage_weights.values()) or 1.0
        w = self.stage_weights.get(stage, 0.0)
        frac = min(1.0, (self._done_weight + w * step / max(total, 1)) / total_w) if self.stage_weights else 0.0
        if self.callback is not None:
            elapsed = time.monotonic() - self._t0
            eta = elapsed * (1 - frac) / frac if frac > 0 else None
            self.callback(Progress(stage, step, total, frac, elapsed, eta))
        self.check_cancel()

    def finish_stage(self, stage: str) -> None:
        self._done_weight += self.stage_weights.get(stage, 0.0)


def progress_share(callback: ProgressFn | None, lo: float, hi: float, started: float) -> ProgressFn | None:
    """A callback that reports one part of a job (its own fraction 0..1) as the share [lo, hi] of the
    whole (generation, then lesion insertion into each image); elapsed time and ETA are the whole job's,
    counted from ``started`` (``time.monotonic()``)."""
    if callback is None:
        return None

    def share(p: Progress) -> None:
        frac = lo + (hi - lo) * min(1.0, max(0.0, p.fraction))
        elapsed = time.monotonic() - started
        callback(Progress(p.stage, p.step, p.total, frac, elapsed, elapsed * (1 - frac) / frac if frac > 0 else None))

    return share
