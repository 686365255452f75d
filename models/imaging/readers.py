"""One entry point for every image a user hands us: DICOM, 8/16-bit PNG and TIFF, sniffed by content.

Extensions lie (``.dcm`` PNGs, extension-less PACS exports), so the format is decided from the first
bytes only. Bad input fails with a typed error before any expensive work: ``probe_image`` checks the
header and the dimensions without decoding pixels (the API calls it before queueing a job), and
``read_image`` runs the same checks before it decodes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from models.errors import BadInputError, PayloadTooLargeError, UnsupportedMediaError
from models.imaging.dicom import (
    check_pixel_header,
    dataset_to_image,
    laterality_of,
    parse_dataset,
    view_of,
)
from models.imaging.files import read_png

Format = Literal["dicom", "png", "tiff"]

#: Library defaults; the service passes its own limits from settings (max_image_pixels/side).
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_MAX_SIDE = 8192

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PixelData, Float/DoubleFloatPixelData
#: Probing leaves DICOM values above this size (the pixel data) unread.
_DEFER_BYTES = 256 * 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_MAGICS = {
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"%PDF": "PDF",
    b"PK\x03\x04": "ZIP archive",
    b"\x1f\x8b": "gzip archive",
}


@dataclass(frozen=True)
class ImageInfo:
    """What we know about an image before and after decoding. ``dataset`` is the parsed DICOM
    header (pixel data dropped), kept so derived outputs can join the input's study."""

    format: Format
    height: int
    width: int
    bits: int | None = None
    photometric: str | None = None
    laterality: Literal["L", "R"] | None = None
    view: str | None = None  # "CC", "MLO", "other" or None
    modality: str | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    transfer_syntax: str | None = None
    presentation_intent: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    dataset: Dataset | None = field(default=None, repr=False, compare=False)

    def to_row(self) -> dict[str, Any]:
        """Flat, CSV-friendly fields (no dataset)."""
        row = {k: v for k, v in asdict(self).items() if k != "dataset"}
        if self.pixel_spacing_mm is not None:
            row["pixel_spacing_mm"] = f"{self.pixel_spacing_mm[0]:g}\\{self.pixel_spacing_mm[1]:g}"
        return row


# ---------------------------------------------------------------------------------------------
def sniff_format(head: bytes) -> Format:
    """Decide the format from the first bytes (at least 132 when available)."""
    if not head:
        raise BadInputError("empty file")
    if head[128:132] == b"DICM" or head[:4] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    # Preamble-less DICOM (old ACR-NEMA style exports): starts with a group 0x0008 element.
    if len(head) >= 8 and head[:2] == b"\x08\x00" and head[3:4] in (b"\x00",):
        return "dicom"
    for magic, name in _OTHER_MAGICS.items():
        if head.startswith(magic):
            raise UnsupportedMediaError(f"{name} files are not supported: give DICOM, PNG or TIFF")
    if len(head) < 132 and head[:1] in (b"\x00",):
        raise BadInputError(f"file too short to be an image ({len(head)} bytes)")
    raise UnsupportedMediaError("unrecognised file: not DICOM (no 'DICM' marker), PNG or TIFF")


def _head(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes | bytearray):
        return bytes(source[:132])
    with open(source, "rb") as f:
        return f.read(132)


def _check_dims(height: int, width: int, max_pixels: int | None, max_side: int | None) -> None:
    if height <= 0 or width <= 0:
        raise BadInputError(f"image has invalid dimensions {height}x{width}")
    if max_side is not None and max(height, width) > max_side:
        raise PayloadTooLargeError(f"image is {height}x{width}; the longest side allowed is {max_side}")
    if max_pixels is not None and height * width > max_pixels:
        raise PayloadTooLargeError(f"image has {height * width} pixels; at most {max_pixels} allowed")


# DICOM ---------------------------------------------------------------------------------------
def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return None


def _str(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value is not None else None


def dicom_info(ds: Dataset) -> ImageInfo:
    """ImageInfo from a parsed DICOM header (pixel data not touched)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    header = Dataset()
    for tag in list(ds.keys()):  # by tag: iterating elements would read deferred pixel data
        if tag not in _PIXEL_TAGS:
            header.add(ds[tag])
    header.file_meta = meta if meta is not None else Dataset()
    return ImageInfo(
        format="dicom",
        height=int(ds.Rows),
        width=int(ds.Columns),
        bits=int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0) or None,
        photometric=_str(ds, "PhotometricInterpretation"),
        laterality=laterality_of(ds),
        view=view_of(ds),
        modality=_str(ds, "Modality"),
        patient_id=_str(ds, "PatientID"),
        study_uid=_str(ds, "StudyInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        sop_uid=_str(ds, "SOPInstanceUID"),
        transfer_syntax=str(syntax) if syntax else None,
        presentation_intent=_str(ds, "PresentationIntentType"),
        pixel_spacing_mm=_spacing(ds),
        dataset=header,
    )


# PNG / TIFF ----------------------------------------------------------------------------------
_MODE_BITS = {"1": 1, "L": 8, "LA": 8, "P": 8, "RGB": 8, "RGBA": 8, "I;16": 16, "I;16B": 16, "I;16L": 16}


def _raster_info(data: bytes, fmt: Format, max_pixels: int | None, max_side: int | None) -> ImageInfo:
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            mode = im.mode
            frames = int(getattr(im, "n_frames", 1) or 1)
            _check_dims(height, width, max_pixels, max_side)
            if fmt == "png":
                im.verify()  # chunk CRCs and structure, without inflating the pixels
    except (PayloadTooLargeError, BadInputError):
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(f"image too large: {exc}") from exc
    except Exception as exc:
        raise BadInputError(f"cannot read {fmt.upper()} image: {type(exc).__name__}: {exc}") from exc
    if frames != 1:
        raise BadInputError(f"multi-page {fmt.upper()} ({frames} pages) is not supported: give one image")
    if mode not in _MODE_BITS and mode not in ("I", "F"):
        raise UnsupportedMediaError(f"{fmt.upper()} pixel mode {mode!r} is not supported")
    bits = _MODE_BITS.get(mode, 32)
    photometric = "RGB" if mode in ("RGB", "RGBA", "P") else "MONOCHROME2"
    return ImageInfo(format=fmt, height=height, width=width, bits=bits, photometric=photometric)


def _decode_raster(blob: bytes) -> np.ndarray:
    """PNG/TIFF pixels through the one 8/16-bit reader (it also turns palette/alpha/1-bit into gray)."""
    return read_png(blob)


# ---------------------------------------------------------------------------------------------
@contextmanager
def _dicom_errors() -> Iterator[None]:
    """pydicom parses lazily: a damaged element surfaces as ValueError/NotImplementedError/... when it
    is first read. Any such failure is the file's fault, so it becomes a BadInputError."""
    try:
        yield
    except (BadInputError, FileNotFoundError):
        raise
    except (ValueError, NotImplementedError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        raise BadInputError(f"damaged DICOM header: {type(exc).__name__}: {exc}") from exc


def probe_image(
    data: bytes | str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> ImageInfo:
    """Validate format, header and dimensions without decoding the pixels.

    For DICOM it also checks that the pixel data is complete (native syntaxes) and that a decoder
    exists for compressed ones, so a file that passes will not fail later for those reasons.
    """
    fmt = sniff_format(_head(data))
    if fmt == "dicom":
        size = len(data) if isinstance(data, bytes | bytearray) else Path(data).stat().st_size
        with _dicom_errors():
            ds = parse_dataset(bytes(data) if isinstance(data, bytearray) else data, defer_size=_DEFER_BYTES)
            check_pixel_header(ds, max_pixels=max_pixels, max_side=max_side, file_size=size)
            return dicom_info(ds)
    blob = data if isinstance(data, bytes | bytearray) else Path(data).read_bytes()
    return _raster_info(bytes(blob), fmt, max_pixels, max_side)


def read_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    apply_voi: bool = True,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image to float32 [0, 1] (H x W, MONOCHROME2: bright tissue on dark) and its info.

    DICOM: modality LUT, VOI LUT (``apply_voi``), MONOCHROME1 inverted. PNG/TIFF: 8-bit / 255,
    16-bit / 65535, RGB averaged to gray. Size limits are checked before any pixel is decoded.
    """
    if isinstance(source, bytes | bytearray) and len(source) == 0:
        raise BadInputError("empty file")
    if not isinstance(source, bytes | bytearray) and not Path(source).is_file():
        raise BadInputError(f"no such file: {source}")
    fmt = sniff_format(_head(source))
    if fmt == "dicom":
        with _dicom_errors():
            ds = parse_dataset(source)
            check_pixel_header(ds, max_pixels=max_pixels, max_side=max_side)
            image = dataset_to_image(ds, apply_voi=apply_voi)
            return image, dicom_info(ds)
    blob = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    info = _raster_info(blob, fmt, max_pixels, max_side)
    image = _decode_raster(blob)
    if image.shape != (info.height, info.width):
        raise BadInputError(f"decoded image has shape {image.shape}, header says {info.height}x{info.width}")
    return np.ascontiguousarray(image, dtype=np.float32), info
