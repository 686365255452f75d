"""Entry point of the ``mammogen`` command: a registry of subcommands, each in its own module.

A subcommand module defines ``configure(parser)`` and ``run(args) -> int``. Modules are imported
only when their command is chosen, so ``mammogen --help`` stays fast (no torch import).
A command whose module is ``None`` is announced but not built: it says so and exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from app import version
from models.errors import MammogenError, NotBuiltError


@dataclass(frozen=True)
class Command:
    help: str
    module: str | None  # None: announced, not built yet
    issue: int


COMMANDS: dict[str, Command] = {
    "serve": Command("run the API and one worker (embeds Redis when none is configured)", "app.cli.serve", 7),
    "worker": Command("run one GPU/CPU worker that loads the bundles once and takes jobs", "app.cli.worker", 7),
    "generate": Command("generate full-resolution mammograms with the MAMBO ensemble", "app.cli.generate", 3),
    "bundle": Command("create and inspect checkpoint bundles", "app.cli.bundle", 3),
    "dualview": Command("generate CC + MLO pairs with the dual-view model", "app.cli.dualview", 5),
    "super-resolve": Command("super-resolve a low-resolution mammogram (DICOM or PNG)", "app.cli.superres", 6),
    "anomaly-map": Command("anomaly map of a mammogram against a healthy model", "app.cli.anomaly", 6),
    "insert-lesion": Command(
        "insert lesions (kind, place, size) into a mammogram, with their masks", "app.cli.insert_lesion", 18
    ),
    "train": Command("train a MAMBO stage or the dual-view model on a folder of mammograms", "app.cli.train", 4),
    "phantoms": Command("write seeded procedural CC/MLO phantoms (DICOM + PNG)", "app.cli.phantoms", 4),
    "ingest": Command("index a folder of DICOM/PNG/TIFF mammograms for training", "app.cli.ingest", 4),
    "evaluate": Command("evaluate generated images (FID/KID, seams, dual-view, SR, anomaly)", "app.cli.evaluate", 9),
    "bench": Command("benchmarks: U-Net throughput and full-image generation", "app.cli.bench", 8),
}


def _not_built_message(name: str, cmd: Command) -> str:
    return f"`mammogen {name}` is not built yet (tracked in issue {cmd.issue})."


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammogen",
        description="Synthetic mammography: MAMBO generation, dual-view pairs, super-resolution, anomaly maps.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        label = cmd.help if cmd.module else f"{cmd.help} [not built yet]"
        p = sub.add_parser(name, help=label, description=label)
        if name != chosen:
            continue
        if cmd.module is not None:
            module = importlib.import_module(cmd.module)
            module.configure(p)
            p.set_defaults(_run=module.run)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen_command(argv)
    if chosen is not None and COMMANDS[chosen].module is None and not {"-h", "--help"} & set(argv):
        print(f"mammogen {chosen}: error: {_not_built_message(chosen, COMMANDS[chosen])}", file=sys.stderr)
        return NotBuiltError.exit_code
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except MammogenError as exc:
        print(f"mammogen {args.command}: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
