"""One entry point for every image a user hands us: DICOM, PNG and TIFF, sniffed by content.

Extensions lie (``.dcm`` PNGs, extension-less PACS exports), so the format is decided from the first
bytes only. Bad input fails with a typed error before any expensive work: ``probe_image`` checks the
header, the dimensions and (opt-in) the expansion ratio of a compressed file without decoding pixels
(the API calls it before queueing a job), and ``read_image`` runs the same checks before it decodes.
PNG goes through Pillow (every bit depth and colour type; 16-bit colour is read at 8 bits); TIFF
through tifffile + imagecodecs (every sample type, planar layout and compression they decode);
what neither reads is refused with an UnsupportedMediaError that names the layout.
"""

from __future__ import annotations

import io
import os
import re
import struct
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
from models.intensity import from_uint16

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
#: PNG colour types (IHDR) -> (photometric, samples).
_PNG_COLOR = {0: ("MONOCHROME2", 1), 2: ("RGB", 3), 3: ("PALETTE COLOR", 1), 4: ("MONOCHROME2", 2), 6: ("RGB", 4)}
#: TIFF photometric interpretations we turn into gray (the rest is refused, naming it).
_TIFF_PHOTOMETRIC = {"MINISBLACK": "MONOCHROME2", "MINISWHITE": "MONOCHROME1", "RGB": "RGB", "PALETTE": "PALETTE COLOR"}
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """An exception as a client may read it: no object reprs (memory addresses) from the decoder."""
    return f"{type(exc).__name__}: {_ADDRESS.sub('the upload', str(exc))}"


def _png_info(blob: bytes) -> ImageInfo:
    """Size, depth and colour type from the IHDR chunk: Pillow never sees a header we refuse."""
    if len(blob) < 33 or blob[12:16] != b"IHDR":
        raise BadInputError("cannot read PNG image: the IHDR header chunk is missing or cut")
    width, height, depth, color = struct.unpack(">IIBB", blob[16:26])
    if color not in _PNG_COLOR or depth not in (1, 2, 4, 8, 16):
        raise BadInputError(f"cannot read PNG image: invalid IHDR (bit depth {depth}, colour type {color})")
    photometric, _ = _PNG_COLOR[color]
    return ImageInfo(format="png", height=height, width=width, bits=depth, photometric=photometric)


def _tiff_page(tif: Any) -> Any:
    if len(tif.pages) != 1:
        raise BadInputError(f"multi-page TIFF ({len(tif.pages)} pages) is not supported: give one image")
    return tif.pages.first


def _tiff_layout(page: Any) -> tuple[str, str]:
    """(our photometric, a readable layout name), or UnsupportedMediaError naming what is not read."""
    photometric = getattr(page.photometric, "name", str(page.photometric))
    dtype = np.dtype(page.dtype) if page.dtype is not None else None
    layout = f"{page.bitspersample}-bit {photometric} with {page.samplesperpixel} sample(s), {page.compression.name}"
    if dtype is None or dtype.kind not in "biuf":
        kind = "complex" if dtype is not None and dtype.kind == "c" else "unknown"
        raise UnsupportedMediaError(f"TIFF layout not supported: {kind} samples ({layout})")
    if photometric not in _TIFF_PHOTOMETRIC:
        raise UnsupportedMediaError(f"TIFF layout not supported: photometric {photometric} ({layout})")
    colour = 3 if photometric == "RGB" else 1
    if page.samplesperpixel - colour > 1 or page.samplesperpixel < colour:
        raise UnsupportedMediaError(f"TIFF layout not supported: {layout}")
    return _TIFF_PHOTOMETRIC[photometric], layout


def _tiff_info(blob: bytes) -> ImageInfo:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(blob)) as tif:
        page = _tiff_page(tif)
        photometric, _ = _tiff_layout(page)
        height, width = int(page.imagelength), int(page.imagewidth)
        bits = int(page.bitspersample)
    return ImageInfo(format="tiff", height=height, width=width, bits=bits, photometric=photometric)


def _raster_info(
    data: bytes,
    fmt: Format,
    max_pixels: int | None,
    max_side: int | None,
    max_pixels_per_byte: float | None = None,
) -> ImageInfo:
    """Header only (nothing inflated): dimensions, depth, layout, and the bounds checked on them."""
    try:
        info = _png_info(data) if fmt == "png" else _tiff_info(data)
    except (BadInputError, MemoryError):
        raise
    except Exception as exc:
        raise BadInputError(f"cannot read {fmt.upper()} image: {_reason(exc)}") from exc
    _check_dims(info.height, info.width, max_pixels, max_side)
    _check_expansion(info, len(data), max_pixels_per_byte)
    if fmt == "png":
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # chunk CRCs and structure, without inflating the pixels
        except Exception as exc:
            raise BadInputError(f"cannot read PNG image: {_reason(exc)}") from exc
    return info


#: Below this many pixels an image cannot be a memory threat, whatever it compresses to.
_BOMB_FLOOR_PIXELS = 1 << 20


def _check_expansion(info: ImageInfo, nbytes: int, max_pixels_per_byte: float | None) -> None:
    """A decompression bomb is a tiny file that decodes to a huge image: refuse it from the header."""
    pixels = info.height * info.width
    if max_pixels_per_byte is None or pixels < _BOMB_FLOOR_PIXELS:
        return
    ratio = pixels / max(1, nbytes)
    if ratio > max_pixels_per_byte:
        raise PayloadTooLargeError(
            f"refused as a decompression bomb: a {nbytes}-byte {info.format.upper()} file that decodes to "
            f"{info.height}x{info.width} pixels ({ratio:.0f} pixels per byte; at most {max_pixels_per_byte:g} allowed)"
        )


def _decode_tiff(blob: bytes) -> np.ndarray:
    """Every TIFF layout tifffile decodes -> float32 [0, 1] gray (MONOCHROME2)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(blob)) as tif:
            page = _tiff_page(tif)
            photometric, layout = _tiff_layout(page)
            arr = page.asarray()
            axes = page.axes
            colormap = page.colormap
    except (BadInputError, MemoryError):
        raise
    except Exception as exc:
        raise BadInputError(f"cannot decode TIFF image: {_reason(exc)}") from exc
    if "S" in axes:  # samples last, whatever the planar configuration
        arr = np.moveaxis(arr, axes.index("S"), -1)
    if photometric == "PALETTE COLOR":
        if colormap is None:
            raise BadInputError("palette TIFF without a colour map")
        arr = np.moveaxis(np.asarray(colormap)[:, arr], 0, -1)  # indices -> RGB (16-bit entries)
    elif arr.ndim == 3:
        arr = arr[..., :3] if photometric in ("RGB", "PALETTE COLOR") else arr[..., 0]  # drop alpha
    gray = _unit_range(arr, layout)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    return 1.0 - gray if photometric == "MONOCHROME1" else gray


def _unit_range(arr: np.ndarray, layout: str) -> np.ndarray:
    """Samples -> [0, 1]: by bit depth for 1/8/16-bit unsigned; floats in [0, 1] as they are; other
    ranges (signed, 32-bit, floats like attenuation values) min-max scaled."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return from_uint16(arr)
    values = arr.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise BadInputError(f"TIFF ({layout}) holds {int((~finite).sum())} NaN or infinite values")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return values.astype(np.float32)
    return ((values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)).astype(np.float32)


def _decode_raster(blob: bytes, fmt: Format) -> np.ndarray:
    """PNG through the one 8/16-bit reader (it also turns palette/alpha/1-bit into gray); TIFF through tifffile."""
    if fmt == "tiff":
        return _decode_tiff(blob)
    try:
        return read_png(blob)
    except BadInputError as exc:
        raise BadInputError(_ADDRESS.sub("the upload", exc.message)) from exc


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
    max_pixels_per_byte: float | None = None,
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
            info = dicom_info(ds)
        _check_expansion(info, size, max_pixels_per_byte)
        return info
    blob = data if isinstance(data, bytes | bytearray) else Path(data).read_bytes()
    return _raster_info(bytes(blob), fmt, max_pixels, max_side, max_pixels_per_byte)


def read_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels_per_byte: float | None = None,
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
            size = len(source) if isinstance(source, bytes | bytearray) else Path(source).stat().st_size
            _check_expansion(dicom_info(ds), size, max_pixels_per_byte)
            image = dataset_to_image(ds, apply_voi=apply_voi)
            return image, dicom_info(ds)
    blob = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    info = _raster_info(blob, fmt, max_pixels, max_side, max_pixels_per_byte)
    image = _decode_raster(blob, fmt)
    if image.shape != (info.height, info.width):
        raise BadInputError(f"decoded image has shape {image.shape}, header says {info.height}x{info.width}")
    return np.ascontiguousarray(image, dtype=np.float32), info
