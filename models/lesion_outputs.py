"""What a lesion insertion hands back, written in one place for `mammogen insert-lesion`, the service's
insert-lesion job and generation with lesions (so the CLI and the service write the same files).

Files (``prefix`` is empty for an insertion, ``image00_`` ... beside each generated image):

- ``<prefix>mask-01.png`` ... one label image per lesion, 8-bit, lesion 255 / background 0 (the phantoms'
  ``_lesions.png`` convention; any non-zero pixel is lesion), exactly the mask that was asked for;
- ``<prefix>mask-union.png``: their union, same encoding;
- ``<prefix>lesions.json``: what was put where (per lesion: kind, centre, diameter, mask pixels, bounding
  boxes, scale), the run's statistics, the input and the bundle's name and version;
- ``<prefix>lesions_seg.dcm`` beside a generated image written as DICOM: the masks as one DICOM SEG
  referencing that image (its Digital Mammography object when both were written);
- for an insertion, the edited image (``edited.png`` 16-bit; ``edited.npy``; ``edited.dcm`` a derived
  Secondary Capture; ``edited_mg.dcm`` a derived Digital Mammography image) and ``lesions_seg.dcm``: the
  masks as one DICOM SEG (a segment per lesion) referencing the edited DICOM image.

No torch here (the API imports ``default_formats`` and ``check_formats``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import BadInputError

UNION_MASK = "mask-union.png"
REPORT = "lesions.json"
EDITED = "edited"
SEG = "lesions_seg.dcm"
#: What an insertion can write, by the service's format names (``workers.job_requests.OUTPUT_FORMATS``).
INSERTION_FORMATS: tuple[str, ...] = ("png16", "npy", "dicom", "dicom-mg", "dicom-seg")


def mask_name(n: int) -> str:
    """The file of lesion ``n`` (1-based)."""
    return f"mask-{n:02d}.png"


def default_formats(info: Any) -> tuple[str, ...]:
    """What an insertion writes when the request names no formats: the 16-bit PNG and, for a DICOM input,
    the edited image as DICOM (Digital Mammography when the input states its laterality and a CC/MLO
    view, else Secondary Capture) with the masks as a DICOM SEG referencing it."""
    if getattr(info, "format", None) != "dicom":
        return ("png16",)
    mg = getattr(info, "laterality", None) in ("L", "R") and getattr(info, "view", None) in ("CC", "MLO")
    return ("png16", "dicom-mg" if mg else "dicom", "dicom-seg")


def check_formats(formats: Sequence[str], info: Any = None) -> tuple[str, ...]:
    """The formats, deduplicated; BadInputError naming what this input cannot give (``info`` None: only
    what the formats alone rule out)."""
    out = tuple(dict.fromkeys(formats))
    bad = [f for f in out if f not in INSERTION_FORMATS]
    if bad or not out:
        raise BadInputError(f"formats must be a non-empty list of {', '.join(INSERTION_FORMATS)}, got {list(formats)}")
    if "png16" not in out:
        raise BadInputError("an insertion always returns the 16-bit PNG: formats must include png16")
    if "dicom-seg" in out and not {"dicom", "dicom-mg"} & set(out):
        raise BadInputError("dicom-seg references the edited DICOM image: add dicom or dicom-mg to formats")
    if info is not None:
        dicom_out = [f for f in out if f in ("dicom", "dicom-mg", "dicom-seg")]
        if dicom_out and getattr(info, "format", None) != "dicom":
            raise BadInputError(
                f"{', '.join(dicom_out)} output joins the input's DICOM study: "
                f"it needs a DICOM input, not {info.format}"
            )
        if "dicom-mg" in out and (info.laterality not in ("L", "R") or info.view not in ("CC", "MLO")):
            raise BadInputError(
                "dicom-mg needs a DICOM input that states its laterality and a CC or MLO view "
                f"(this input: laterality {info.laterality}, view {info.view}); use dicom instead"
            )
    return out


def generated_info(laterality: str, chest_wall: str) -> Any:
    """The orientation of a generated image as tags (a pydicom Dataset): the insertion then flips it
    exactly as it was made instead of guessing the chest-wall side from its content."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.ImageLaterality = laterality
    ds.PatientOrientation = ["A" if chest_wall == "left" else "P", "F"]
    return ds


def write_masks(out_dir: str | os.PathLike[str], masks: Sequence[np.ndarray], prefix: str = "") -> list[Path]:
    """One 8-bit label PNG per lesion (255 = lesion) and their union."""
    from models.imaging.files import write_png8

    out = Path(out_dir)
    union = np.zeros(np.asarray(masks[0]).shape, bool)
    paths = []
    for n, mask in enumerate(masks, 1):
        m = np.asarray(mask, bool)
        union |= m
        paths.append(write_png8(out / f"{prefix}{mask_name(n)}", m.astype(np.float32)))
    paths.append(write_png8(out / f"{prefix}{UNION_MASK}", union.astype(np.float32)))
    return paths


def read_mask(source: str | os.PathLike[str] | bytes, name: str | None = None) -> np.ndarray:
    """A label image (a file, or its bytes as uploaded) as a bool mask: any non-zero pixel is lesion; 8/16-bit
    PNG, TIFF, as the readers read. Size bounds are the caller's (the CLI's image, the API's header check)."""
    from models.imaging.readers import read_image

    image, _ = read_image(source, max_pixels=None, max_side=None)
    mask = np.asarray(image) > 0
    if not mask.any():
        what = name or ("" if isinstance(source, bytes) else Path(source).name)
        raise BadInputError(f"lesion mask {what} has no lesion pixel (all zero)".replace("  ", " "))
    return mask


def report(
    result: Any,
    *,
    bundle: dict[str, Any],
    input: dict[str, Any] | None = None,
    files: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``lesions.json`` (JSON-ready)."""
    from models.imaging.files import json_default

    body = {
        "lesions": result.records,
        "edited_pixels": int(np.count_nonzero(result.edited)),
        "stats": result.stats,
        "bundle": bundle,
        **({"input": input} if input is not None else {}),
        **(extra or {}),
        "files": list(files),
    }
    return json.loads(json.dumps(body, default=json_default))


def write_report(path: str | os.PathLike[str], body: dict[str, Any]) -> Path:
    from models.imaging.files import atomic_write

    return atomic_write(path, lambda f: f.write(json.dumps(body, indent=2).encode()))


def write_generated(
    out_dir: str | os.PathLike[str],
    stem: str,
    healthy: np.ndarray,
    insertion: Any,
    *,
    bundle: dict[str, Any],
    seed: int,
    image_dicom: Path | None = None,
) -> list[Path]:
    """Beside a generated image ``<stem>.*`` that got lesions: ``<stem>_healthy.png`` (the same generation
    before insertion), ``<stem>_mask-01.png`` ... ``<stem>_mask-union.png`` and ``<stem>_lesions.json``; with
    ``image_dicom`` (the image written as DICOM), ``<stem>_lesions_seg.dcm``: the masks as a DICOM SEG
    referencing it."""
    from models.imaging.files import write_png16

    out, prefix = Path(out_dir), f"{stem}_"
    paths = [write_png16(out / f"{prefix}healthy.png", healthy), *write_masks(out, insertion.masks, prefix)]
    if image_dicom is not None:
        paths.append(write_seg(out / f"{prefix}{SEG}", insertion, image_dicom, bundle["name"], bundle["version"]))
    body = report(
        insertion,
        bundle=bundle,
        input={"generated": True, "seed": seed, "height": int(healthy.shape[0]), "width": int(healthy.shape[1])},
        files=[p.name for p in paths] + [f"{prefix}{REPORT}"],
        extra={"image": stem},
    )
    return [*paths, write_report(out / f"{prefix}{REPORT}", body)]


def write_edited(
    out_dir: str | os.PathLike[str],
    result: Any,
    *,
    formats: Sequence[str],
    info: Any,
    model_name: str,
    model_version: str,
) -> list[Path]:
    """The edited image in each format; with dicom-seg, the masks as a SEG referencing the edited DICOM
    (the MG object when both were written). A DICOM output joins the input's study in a new series."""
    from models.imaging.files import write_npy, write_png16

    out = Path(out_dir)
    image = np.asarray(result.image, np.float32)
    paths = []
    if "png16" in formats:
        paths.append(write_png16(out / f"{EDITED}.png", image))
    if "npy" in formats:
        paths.append(write_npy(out / f"{EDITED}.npy", image))
    dicoms: list[Path] = []
    if {"dicom", "dicom-mg"} & set(formats):
        from models.imaging.dicom_write import write_derived_dicom, write_derived_mg

        source = getattr(info, "dataset", None)
        if source is None:
            raise BadInputError("DICOM output of an insertion joins the input's study: it needs a DICOM input")
        kinds = ", ".join(r["kind"] for r in result.records)
        derived = {
            "description": f"lesion insertion ({kinds})",
            "model_name": model_name,
            "model_version": model_version or "unversioned",
            "chest_wall": (result.stats.get("orientation") or {}).get("chest_wall"),
            "pixel_spacing_mm": info.pixel_spacing_mm[0] if getattr(info, "pixel_spacing_mm", None) else None,
        }
        if "dicom" in formats:
            dicoms.append(write_derived_dicom(out / f"{EDITED}.dcm", image, source, **derived))
        if "dicom-mg" in formats:
            dicoms.append(write_derived_mg(out / f"{EDITED}_mg.dcm", image, source, **derived))
        paths += dicoms
    if "dicom-seg" in formats:
        if not dicoms:
            raise BadInputError("dicom-seg references the edited DICOM image: add dicom or dicom-mg to formats")
        paths.append(write_seg(out / SEG, result, dicoms[-1], model_name, model_version))
    return paths


def write_seg(path: Path, result: Any, edited_dicom: Path, model_name: str, model_version: str) -> Path:
    """The lesion masks as one DICOM SEG, a segment per lesion, on the edited image's pixel grid."""
    import pydicom

    from models.imaging.dicom_seg import LESION, SegmentInfo, write_segments

    source = pydicom.dcmread(edited_dicom, stop_before_pixels=True)
    infos = [
        SegmentInfo(f"lesion {n}: {r['kind']}", LESION, model_name, model_version or "unversioned")
        for n, r in enumerate(result.records, 1)
    ]
    return write_segments(path, result.masks, source, infos)
