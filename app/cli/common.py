"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def progress_printer(label: str) -> Callable[[Any], None]:
    """A progress callback that prints about every 10 % to stderr, so stdout stays one JSON line."""
    last = [-1]

    def callback(p: Any) -> None:
        tenth = int(p.fraction * 10)
        if tenth != last[0]:
            last[0] = tenth
            print(f"{label}: {p.stage} {p.fraction:.0%}", file=sys.stderr)

    return callback


def add_sampling_arguments(
    parser: argparse.ArgumentParser,
    *,
    kind: str,
    sampler: str | None = None,
    steps: int | None = None,
    steps_help: str = "denoising steps per stage",
    max_batch: int = 16,
    max_batch_help: str = "tiles per network call (bounds memory)",
    stitching: bool = True,
) -> None:
    """The flags of ``models.options.SamplingOptions`` (same names as the API fields); seeds are per command.

    ``--sampler`` / ``--steps`` default to the job ``kind``'s (``models.options.SAMPLING_DEFAULTS``, the
    API's table), so a command and a request that leave them out run the same; ``sampler`` / ``steps``
    set other defaults for commands that are not a job (evaluations)."""
    from models.options import SAMPLERS, STITCHING_MODES, describe_defaults

    parser.set_defaults(sampling_kind=kind)
    default = describe_defaults(kind) if sampler is None and steps is None else f"{sampler} {steps}"
    parser.add_argument("--sampler", default=sampler, choices=SAMPLERS, help=f"default: {default}")
    parser.add_argument("--steps", type=int, default=steps, help=f"{steps_help} (default: {default})")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic, 1: DDPM-like)")
    parser.add_argument("--max-batch", type=int, default=max_batch, help=max_batch_help)
    if stitching:
        parser.add_argument("--stitching", default="wavefront", choices=STITCHING_MODES)


def sampling_options(args: argparse.Namespace, seeds: tuple[int, ...]) -> Any:
    """The validated SamplingOptions of the flags added by :func:`add_sampling_arguments`."""
    from models.options import SamplingOptions, default_sampling

    sampler, steps = default_sampling(args.sampling_kind, args.sampler, args.steps)
    return SamplingOptions(
        sampler=sampler,  # type: ignore[arg-type]
        steps=steps,
        eta=args.eta,
        stitching=getattr(args, "stitching", "wavefront"),
        max_batch=args.max_batch,
        seeds=seeds,
        skip_background=not getattr(args, "no_skip_background", False),
    )


def add_acceleration_arguments(parser: argparse.ArgumentParser) -> None:
    """``--acceleration`` and ``--dtype``: how the networks run; the defaults are the worker's settings
    (``MAMMOGEN_ACCELERATION``, ``MAMMOGEN_DTYPE``), so the CLI makes the service's pixels."""
    parser.add_argument(
        "--acceleration",
        default=None,
        help="auto, optimised, reference or a label such as bfloat16+channels_last+sdpa "
        "(default: MAMMOGEN_ACCELERATION, auto)",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("auto", "float32", "bfloat16", "float16"),
        help="network weights and activations; overrides the acceleration's (default: MAMMOGEN_DTYPE, auto)",
    )


def load_accelerated(pipeline: Any, bundle: Any, args: argparse.Namespace, **kwargs: Any) -> tuple[Any, Any]:
    """``pipeline.from_bundle`` on the requested device, its networks prepared as the worker prepares
    them (`models.acceleration.accelerate`). Returns (pipeline, Acceleration)."""
    from app.settings import get_settings
    from models.acceleration import accelerate, resolve_acceleration
    from models.devices import resolve_device

    settings = get_settings()
    device = resolve_device(getattr(args, "device", None) or settings.device)
    accel = resolve_acceleration(
        getattr(args, "acceleration", None) or settings.acceleration,
        device,
        getattr(args, "dtype", None) or settings.dtype,
    )
    pipe = pipeline.from_bundle(bundle, device=device, dtype=accel.dtype, **kwargs)
    return accelerate(pipe, accel, device), accel


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, type: Callable[[str], Any]) -> None:
    """Keep an old flag working (hidden from --help) with a warning naming its replacement."""
    dest = new.lstrip("-").replace("-", "_")

    class Deprecated(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, dest, values)

    parser.add_argument(old, dest=dest, type=type, action=Deprecated, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
