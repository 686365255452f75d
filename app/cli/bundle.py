"""``mammogen bundle create|info``: make random-weight bundles, inspect and verify any bundle.

Trained bundles come from ``mammogen train`` (export); ``create --random`` makes bundles with the
right shapes and manifest for smoke tests, benchmarks and wiring the service before training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 3328x2560, got {text!r}") from exc
    return h, w


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="write a random-weight bundle", description="write a random-weight bundle")
    c.add_argument("--preset", default="tiny", choices=("tiny", "small", "paper"), help="network size")
    c.add_argument("--random", action="store_true", required=True, help="random weights (the only source here)")
    c.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    c.add_argument("--kind", default="mambo", choices=("mambo", "dualview"))
    c.add_argument("--size", type=_size, default=None, help="native output size HxW (mambo; default k*s square)")
    c.add_argument("--name", default=None)
    c.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    c.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    i = sub.add_parser("info", help="print a bundle's manifest summary", description="print and verify a bundle")
    i.add_argument("path", type=Path)
    i.add_argument("--no-verify", action="store_true", help="skip recomputing the sha256 of every file")


def run(args: argparse.Namespace) -> int:
    from models.bundle import create_random_bundle, load_bundle
    from models.errors import BadInputError

    if args.action == "create":
        try:
            path = create_random_bundle(
                args.out,
                kind=args.kind,
                preset=args.preset,
                native_size=args.size,
                seed=args.seed,
                name=args.name,
                overwrite=args.overwrite,
            )
        except (ValueError, FileExistsError) as exc:
            raise BadInputError(str(exc)) from exc
        print(json.dumps(load_bundle(path).summary()))
        return 0
    bundle = load_bundle(args.path, verify=not args.no_verify)
    print(json.dumps(bundle.summary(), indent=2))
    return 0
