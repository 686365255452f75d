"""``mammogen evaluate dualview --real DIR --synthetic DIR``: the dual-view paper's Tables 1 and 2.

Pairs are found in each folder (recursively) in one of two ways, documented in docs/DUALVIEW.md:

- DICOM: files grouped by (StudyInstanceUID, ImageLaterality); ViewPosition (or ViewCodeSequence)
  says which is CC and which MLO. `mammogen phantoms` (one study per breast) and `mammogen dualview`
  (one study and series per pair) both write this.
- PNG/TIFF: the file name holds a view token ``CC`` or ``MLO`` (and optionally ``L``/``R``), split
  by ``_``, ``-`` or ``.``; the rest of the name plus the folder is the pair key, so
  ``case0007_R_CC.png`` and ``case0007_R_MLO.png`` (or ``case0007/cc.png`` and ``case0007/mlo.png``)
  form one pair. Names with a token such as ``mask``, ``lesion`` or ``rgb`` are not views and are skipped.

With ``--source auto`` a folder with any DICOM pair is read as DICOM (tags are authoritative), else
as PNG/TIFF. Every view is turned so its chest wall is on the left (`models.imaging.orientation`:
PatientOrientation, else the image content, else laterality) and resized to ``--size`` (the paper's
256; 0 keeps the native size) before masking, so pairs from mixed sources compare.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from models.errors import BadInputError, MammogenError
from models.imaging.files import atomic_write
from models.metrics.dualview_stats import PairOverlap, evaluate_pairs, format_tables, pair_overlap

Source = Literal["auto", "dicom", "png"]
VIEWS = {"cc": "CC", "mlo": "MLO"}
#: File-name tokens that mark a file that is not a view image (masks, previews, composites).
NOT_A_VIEW = {"mask", "masks", "lesion", "lesions", "seg", "gt", "rgb", "preview", "overlay", "composite"}
_SPLIT = re.compile(r"[_\-.]+")


@dataclass
class DiscoveredPairs:
    """CC/MLO file pairs of one folder, and what could not be paired (reported, never silently lost)."""

    source: str
    pairs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    unpaired: list[str] = field(default_factory=list)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", required=True, type=Path, help="folder of real CC/MLO pairs (DICOM or PNG)")
    parser.add_argument("--synthetic", required=True, type=Path, help="folder of generated pairs")
    parser.add_argument("--out", type=Path, default=None, help="write the full report as JSON here")
    parser.add_argument("--size", type=int, default=256, help="resize every view to SIZE x SIZE (0: native)")
    parser.add_argument("--source", choices=("auto", "dicom", "png"), default="auto", help="which files to read")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap CIs with N resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> int:
    if args.size < 0:
        raise BadInputError("--size must be 0 (native) or a positive number of pixels")
    found = {
        name: discover_pairs(folder, args.source)
        for name, folder in (("real", args.real), ("synthetic", args.synthetic))
    }
    overlaps = {name: measure(d, args.size) for name, d in found.items()}
    report = evaluate_pairs(overlaps["real"], overlaps["synthetic"], n_boot=args.bootstrap, seed=args.seed)
    result = {
        "real": {"dir": str(args.real), "source": found["real"].source, "unpaired": found["real"].unpaired},
        "synthetic": {
            "dir": str(args.synthetic),
            "source": found["synthetic"].source,
            "unpaired": found["synthetic"].unpaired,
        },
        "size": args.size,
        "mask": "per view: 0.5/99.5 percentile clip, Otsu (strict >), largest component, holes filled",
        **report.to_dict(),
        "third_channel": third_channel_summary(args.synthetic),
    }
    print(format_tables(report))
    if result["third_channel"]:
        tc = result["third_channel"]
        print(f"Third channel mean |B - |R - G||: mean {tc['mean']:.4f}, max {tc['max']:.4f} over {tc['n']} samples")
    for name, d in found.items():
        if d.unpaired:
            print(f"{name}: {len(d.unpaired)} view file(s) without a partner were skipped", file=sys.stderr)
    if args.out is not None:
        text = json.dumps(result, indent=2, allow_nan=False)
        atomic_write(args.out, lambda f: f.write(text.encode()))
        print(f"report written to {args.out}")
    return 0


def third_channel_summary(folder: Path) -> dict[str, float] | None:
    """The generator's third-channel check, when the folder was written by `mammogen dualview`.

    B is not kept in the view files (only in the raw samples), so it is read from ``dualview.json``.
    """
    path = Path(folder) / "dualview.json"
    if not path.is_file():
        return None
    try:
        errors = [float(p["third_channel_error"]) for p in json.loads(path.read_text())["pairs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path} is not a `mammogen dualview` summary: {exc}") from exc
    if not errors:
        return None
    return {"n": len(errors), "mean": float(np.mean(errors)), "median": float(np.median(errors)), "max": max(errors)}


def discover_pairs(folder: Path, source: Source = "auto") -> DiscoveredPairs:
    """Find the CC/MLO pairs under ``folder``; BadInputError when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    found = None
    if source in ("auto", "dicom"):
        found = _dicom_pairs(folder, files)
    if source == "png" or (source == "auto" and not found.pairs):
        found = _named_pairs(folder, files)
    if not found.pairs:
        raise BadInputError(
            f"no CC/MLO pairs found in {folder} (source {source}); expected DICOMs with ViewPosition and "
            "ImageLaterality, or PNG/TIFF names like case0001_R_CC.png + case0001_R_MLO.png"
        )
    return found


def _dicom_pairs(root: Path, files: list[Path]) -> DiscoveredPairs:
    from models.imaging.dicom import laterality_of, parse_dataset, view_of

    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in files:
        with path.open("rb") as f:
            head = f.read(132)
        if head[128:132] != b"DICM":
            continue
        try:
            ds = parse_dataset(path, stop_before_pixels=True)
        except MammogenError:
            continue
        view = view_of(ds)
        study = str(getattr(ds, "StudyInstanceUID", "") or path.parent)
        key = f"{study}/{laterality_of(ds) or '?'}"
        groups[key][view or "other"].append(path)
    return _pair_up(groups, "dicom", root)


def _named_pairs(root: Path, files: list[Path]) -> DiscoveredPairs:
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in files:
        if path.suffix.lower() not in (".png", ".tif", ".tiff"):
            continue
        tokens = [t for t in _SPLIT.split(path.stem.lower()) if t]
        if NOT_A_VIEW & set(tokens):
            continue
        views = [VIEWS[t] for t in tokens if t in VIEWS]
        if len(views) != 1:
            continue
        rest = [t for t in tokens if t not in VIEWS]
        key = "/".join([*path.parent.relative_to(root).parts, "_".join(rest)])
        groups[key][views[0]].append(path)
    return _pair_up(groups, "png", root)


def _pair_up(groups: dict[str, dict[str, list[Path]]], source: str, root: Path) -> DiscoveredPairs:
    """Keep groups with exactly one CC and one MLO, named by the CC file's path (without suffix)."""
    out = DiscoveredPairs(source)
    for views in groups.values():
        if len(views.get("CC", [])) == 1 and len(views.get("MLO", [])) == 1:
            cc = views["CC"][0]
            out.pairs[cc.relative_to(root).with_suffix("").as_posix()] = (cc, views["MLO"][0])
        else:
            out.unpaired += [str(p.relative_to(root)) for paths in views.values() for p in paths]
    out.pairs = dict(sorted(out.pairs.items()))
    out.unpaired.sort()
    return out


def measure(found: DiscoveredPairs, size: int) -> list[PairOverlap]:
    """IoU/Dice of every pair; each view is read, turned chest-wall-left and resized first."""
    results = []
    for key, (cc_path, mlo_path) in found.pairs.items():
        cc, mlo = (_prepare(p, size) for p in (cc_path, mlo_path))
        if cc.shape != mlo.shape:
            raise BadInputError(f"pair {key}: CC {cc.shape} and MLO {mlo.shape} differ; pass --size to resize")
        results.append(pair_overlap(cc, mlo, key))
    return results


def _prepare(path: Path, size: int) -> np.ndarray:
    """Read a view, put its chest wall on the left (tags, else content: `models.imaging.orientation`), resize."""
    from models.imaging.orientation import canonicalize
    from models.imaging.readers import read_image

    image, info = read_image(path)
    image, _ = canonicalize(image, info)
    if size:
        from skimage.transform import resize

        image = resize(image, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.asarray(image, dtype=np.float32)
