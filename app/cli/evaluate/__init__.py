"""``mammogen evaluate <what>``: one module per evaluation, each with ``configure`` and ``run``.

Add an evaluation by writing ``app/cli/evaluate/<name>.py`` and one line in ``EVALUATIONS``.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line help)
EVALUATIONS: dict[str, tuple[str, str]] = {
    "generation": ("app.cli.evaluate.generation", "FID/KID (whole image and patches), seams, memorization"),
    "dualview": ("app.cli.evaluate.dualview", "CC/MLO mask IoU/Dice statistics, KS and EMD (dual-view paper)"),
    "super-resolution": ("app.cli.evaluate.superres", "PSNR/SSIM of super-resolved phantoms vs bicubic"),
    "anomaly": ("app.cli.evaluate.anomaly", "IoU/Dice, AUROC/AUPRC and IoU by lesion size on phantoms"),
    "lesions": (
        "app.cli.evaluate.lesions",
        "lesion insertion closed loop on held-out phantoms: contrast/size, anomaly maps, patch KID, seams",
    ),
    "demo": ("app.cli.evaluate.demo", "grade bundles: every quality gate on held-out phantoms, with contact sheets"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    for name, (module_name, help_) in EVALUATIONS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            p.set_defaults(_eval_run=None, _eval_name=name)
            continue
        module.configure(p)
        p.set_defaults(_eval_run=module.run, _eval_name=name)


def run(args: argparse.Namespace) -> int:
    if args._eval_run is None:
        from models.errors import NotBuiltError

        raise NotBuiltError(f"`mammogen evaluate {args._eval_name}` is not built yet.")
    return int(args._eval_run(args) or 0)
