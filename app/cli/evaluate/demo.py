"""``mammogen evaluate demo --bundle B [--dualview-bundle D] --out DIR``: grade bundles against the gates.

Runs every gate of :mod:`app.cli.evaluate.gates` on held-out phantoms at the bundle's native size
with the service's default sampling, prints each check with its figure and pass/fail, and writes
``report.md``, ``report.json``, the contact sheets each figure was computed from and
``showcase.png`` (what the bundles make, for a README). Exit status 1 when any check fails, so a
script or CI can use the command as a gate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.cli.evaluate.gates import GATES, QUICK_PLAN, GateResult, GradingPlan, log, resize, service_defaults
from models.imaging.files import json_default, write_png8


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle (default: the configured one)")
    parser.add_argument(
        "--dualview-bundle", type=Path, default=None, help="dual-view bundle (default: the configured one)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md/json and the contact sheets")
    parser.add_argument("--gates", default=",".join(GATES), help=f"comma list of gates ({', '.join(GATES)})")
    parser.add_argument("--quick", action="store_true", help="a few cases per gate: proves the command, grades nothing")
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    from app.cli.evaluate.anomaly import trained_image_size
    from app.cli.superres import require_bundle
    from app.settings import get_settings
    from models.bundle import load_bundle
    from models.devices import resolve_device
    from models.dualview import DualViewPipeline
    from models.errors import BadInputError
    from models.mambo import MamboPipeline

    gates = [g.strip() for g in args.gates.split(",") if g.strip()]
    unknown = [g for g in gates if g not in GATES]
    if unknown or not gates:
        raise BadInputError(f"unknown gate(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(GATES)}")
    settings = get_settings()
    device = resolve_device(args.device or settings.device)
    plan = QUICK_PLAN if args.quick else GradingPlan()
    pipes: dict[str, Any] = {}
    bundles: dict[str, Any] = {}
    if any(GATES[g][0] == "mambo" for g in gates):
        bundles["mambo"] = load_bundle(require_bundle(args.bundle or settings.bundle_path("mambo")))
        pipes["mambo"] = MamboPipeline.from_bundle(bundles["mambo"], device=device)
    if "dualview" in gates:
        bundles["dualview"] = load_bundle(require_bundle(args.dualview_bundle or settings.bundle_path("dualview")))
        pipes["dualview"] = DualViewPipeline.from_bundle(bundles["dualview"], device=device)
    defaults = service_defaults()
    if "dualview" in bundles:
        defaults["dualview_phantom_size"] = trained_image_size(bundles["dualview"]) or (768, 576)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: list[GateResult] = []
    for name in gates:
        kind, gate = GATES[name]
        log(f"gate {name} ...")
        t0 = time.monotonic()
        result = gate(pipes[kind], plan, out, defaults)
        result.seconds = round(time.monotonic() - t0, 1)
        results.append(result)
        # each gate on disk as soon as it ends: a long grading run keeps what it measured
        (out / f"gate-{name}.json").write_text(json.dumps(result.to_dict(), indent=2, default=json_default) + "\n")
        log(f"gate {name}: {'PASS' if result.passed else 'FAIL'} ({result.seconds} s)")
    header = {
        name: f"{b.name} {b.version}" + (" (RANDOM weights)" if b.random_weights else "") for name, b in bundles.items()
    }
    text = format_report(results, header, plan)
    print(text)
    # a subset of gates (--gates) writes its own report, so parts run in parallel into one folder
    suffix = "" if gates == list(GATES) else "-" + "-".join(gates)
    (out / f"report{suffix}.md").write_text(text)
    payload = {"bundles": header, "plan": plan.__dict__, "gates": [r.to_dict() for r in results]}
    (out / f"report{suffix}.json").write_text(json.dumps(payload, indent=2, default=json_default) + "\n")
    for r in results:
        if r.showcase is not None:
            write_png8(out / f"showcase-{SHOWCASE_ORDER.index(r.gate)}.png", np.clip(r.showcase, 0.0, 1.0))
    write_showcase(out)
    return 0 if all(r.passed for r in results) else 1


def format_report(results: list[GateResult], bundles: dict[str, str], plan: GradingPlan) -> str:
    lines = ["## Quality gates", ""]
    lines += [f"- {kind} bundle: {name}" for kind, name in bundles.items()]
    lines += [f"- cases: {plan}", "", "| Gate | Check | Figure | Limit | Result | Note |", "|---|---|---|---|---|---|"]
    for r in results:
        for c in r.checks:
            figure = f"{c.figure:.4g}" if np.isfinite(c.figure) else str(c.figure)
            lines.append(
                f"| {r.gate} | {c.name} | {figure} | {c.limit} | {'PASS' if c.passed else '**FAIL**'} | {c.note} |"
            )
    passed = sum(c.passed for r in results for c in r.checks)
    total = sum(len(r.checks) for r in results)
    lines += ["", f"{passed}/{total} checks pass.", ""]
    for r in results:
        lines.append(f"### {r.gate} ({r.seconds} s)")
        lines.append("")
        lines += [f"- {k}: {v}" for k, v in r.details.items() if not isinstance(v, list | dict) or k == "area_range"]
        lines += [f"- contact sheet: `{s}`" for s in r.sheets]
        lines.append("")
    return "\n".join(lines)


#: The README strip, left to right: a full image, a dual-view pair, super-resolution, an anomaly overlay.
SHOWCASE_ORDER = ["full images", "dual-view", "super-resolution", "anomaly maps"]


def write_showcase(out: Path, height: int = 240) -> Path | None:
    """Compose ``showcase.png`` from the representative images the gates left in ``out`` (each gate
    writes ``showcase-N.png``; gates run in parallel processes add theirs to the same folder)."""
    from models.imaging.files import read_png

    parts = []
    for n in range(len(SHOWCASE_ORDER)):
        path = out / f"showcase-{n}.png"
        if path.is_file():
            image = read_png(path).astype(np.float32)
            parts.append(image / 255.0 if image.max() > 1.0 else image)
    if not parts:
        return None
    rgb = [np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p[..., :3] for p in parts]
    scaled = [resize(p, height) for p in rgb]
    gap = np.ones((height, 6, 3), np.float32)
    strip = np.concatenate([x for p in scaled for x in (p, gap)][:-1], axis=1)
    return write_png8(out / "showcase.png", np.clip(strip, 0.0, 1.0))
