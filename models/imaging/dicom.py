"""DICOM in: decode any projection X-ray to a [0, 1] MONOCHROME2 image; the marks our writers share.

Reading (pydicom 3): pixel data through pydicom's decoder plugins, then the modality LUT (rescale or
LUT sequence), then the VOI LUT (LINEAR / LINEAR_EXACT / SIGMOID windows or a VOI LUT sequence), then
MONOCHROME1 inverted, so every image is bright tissue on a dark background in [0, 1]. Compressed
transfer syntaxes covered by the installed plugins (``decodable_syntaxes()`` lists them at run time):
RLE Lossless (pydicom, pylibjpeg-rle), Deflated, JPEG Baseline/Extended (Pillow), JPEG 2000 lossless
and lossy (openjpeg, Pillow), HTJ2K (openjpeg), JPEG Lossless .4.57/.4.70 (RSNA's exports) and
JPEG-LS .4.80/.4.81 (python-gdcm). A syntax without a plugin (MPEG/HEVC video, JPEG XL, ...) is
refused with an UnsupportedMediaError that names it.

Writing is in `models.imaging.dicom_write` (images) and `models.imaging.dicom_seg` (segmentations);
the marks they share (SOP classes, warnings, view codes) are defined here.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, BinaryIO, Literal

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (
    UID,
    ImplicitVRLittleEndian,
)

from models.errors import BadInputError, PayloadTooLargeError, UnsupportedMediaError

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
DIGITAL_MAMMOGRAPHY_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")

#: Marks every file we generate; readers and people both look for it.
SYNTHETIC_WARNING = "SYNTHETIC - NOT FOR DIAGNOSTIC USE"
PHANTOM_WARNING = "PROCEDURAL PHANTOM - NOT A PATIENT"

Laterality = Literal["L", "R"]
View = Literal["CC", "MLO"]

#: SNOMED CT view codes (PS3.16 CID 4014), and the legacy SNOMED RT codes still found in old files.
VIEW_CODES: dict[str, tuple[str, str, str]] = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}
_LEGACY_VIEW_CODES = {"R-10242": "CC", "R-10226": "MLO"}
#: ViewPosition values that are CC or MLO variants (XCCL/XCCM are exaggerated CC views).
_VIEW_POSITION = {"CC": "CC", "XCC": "CC", "XCCL": "CC", "XCCM": "CC", "FB": "CC", "MLO": "MLO", "SIO": "MLO"}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def decodable_syntaxes() -> list[str]:
    """Transfer syntaxes the installed pydicom plugins can decode (for docs and error messages)."""
    out = []
    for uid in pydicom.uid.AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                out.append(f"{uid} ({UID(uid).name})")
        except NotImplementedError:
            continue
    return out


def parse_dataset(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    stop_before_pixels: bool = False,
    defer_size: int | None = None,
) -> Dataset:
    """Parse a DICOM file (path, bytes or file object) or raise a typed error saying why not.

    ``defer_size`` leaves values larger than that many bytes (the pixel data) unread until used:
    probing and indexing then cost a header read, not a 50 MB one.
    """
    fp: Any = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    except InvalidDicomError as exc:
        raise UnsupportedMediaError(f"not a DICOM file: {exc}") from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # pydicom raises many kinds on truncated or hostile input
        raise BadInputError(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from exc


def check_pixel_header(
    ds: Dataset, *, max_pixels: int | None = None, max_side: int | None = None, file_size: int | None = None
) -> None:
    """Validate the image pixel module before any decoding: refuse what we cannot or will not decode.

    Raises UnsupportedMediaError for non-image objects or syntaxes without a plugin, BadInputError for
    inconsistent headers or truncated native pixel data, PayloadTooLargeError for oversized images.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedMediaError("DICOM object has no pixel data (not an image)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_alloc = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadInputError(f"DICOM image pixel module incomplete: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0:
        raise BadInputError(f"DICOM image has invalid dimensions {rows}x{cols}")
    if max_side is not None and max(rows, cols) > max_side:
        raise PayloadTooLargeError(f"image is {rows}x{cols}; the longest side allowed is {max_side}")
    if max_pixels is not None and rows * cols * frames > max_pixels:
        raise PayloadTooLargeError(f"image has {rows * cols * frames} pixels; at most {max_pixels} allowed")
    if frames != 1:
        raise BadInputError(f"multi-frame DICOM ({frames} frames) is not supported: give one projection image")
    if spp not in (1, 3):
        raise BadInputError(f"DICOM SamplesPerPixel={spp} is not supported")
    if bits_alloc not in (1, 8, 16, 32, 64):
        raise BadInputError(f"DICOM BitsAllocated={bits_alloc} is not valid")
    syntax = ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian) if hasattr(ds, "file_meta") else None
    syntax = UID(syntax or ImplicitVRLittleEndian)
    if not syntax.is_transfer_syntax:
        raise BadInputError(f"DICOM file meta names an unknown transfer syntax {syntax!r}")
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise UnsupportedMediaError(
                f"DICOM transfer syntax {syntax} ({syntax.name}) cannot be decoded here (no pixel-data "
                "plugin for it is installed); convert the file to an uncompressed or JPEG 2000 syntax"
            )
    elif "PixelData" in ds:
        expected = rows * cols * spp * frames * bits_alloc // 8
        elem = ds.get_item("PixelData", keep_deferred=True)
        if isinstance(elem, RawDataElement) and elem.value is None:  # deferred: length from the header
            have = elem.length
            if file_size is not None:
                have = min(have, max(0, file_size - elem.value_tell))
        else:
            have = len(ds.PixelData) if ds.PixelData is not None else 0
        if have < expected:
            raise BadInputError(f"DICOM pixel data truncated: {have} bytes, expected {expected}")


def _output_range_after_modality(ds: Dataset) -> tuple[float, float]:
    """The value range the modality LUT can produce: the stored range through rescale/LUT."""
    bits = int(ds.get("BitsStored", ds.BitsAllocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if "ModalityLUTSequence" in ds:
        item = ds.ModalityLUTSequence[0]
        lut_bits = int(item.LUTDescriptor[2])
        return 0.0, float(2**lut_bits - 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return (min(a, b), max(a, b))


def _voi_output_range(ds: Dataset, index: int) -> tuple[float, float] | None:
    """The range apply_voi_lut maps into, or None when the dataset carries no VOI transform."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > index:
        lut_bits = int(ds.VOILUTSequence[index].LUTDescriptor[2])
        return 0.0, float(2**lut_bits - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # pydicom windows into the modality output range (stored range through rescale / LUT).
        return _output_range_after_modality(ds)
    return None


def _decode_error(ds: Dataset, exc: BaseException) -> BadInputError:
    """What a client may read about a decoder failure: the syntax and the reason, not the plugin list."""
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian) if meta is not None else ""))
    name = syntax.name if syntax.is_transfer_syntax else "an unknown transfer syntax"
    unsupported = re.search(r"does not support (.+)$", str(exc), re.MULTILINE)
    if unsupported:  # every installed plugin declined this layout
        return UnsupportedMediaError(
            f"DICOM pixel data in {name} cannot be decoded here ({unsupported.group(1)} is not supported); "
            "convert the file to an uncompressed or JPEG 2000 syntax"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = "the encoded data is damaged" if "plugin" in first else re.sub(r" at 0x[0-9a-fA-F]+", "", first)
    return BadInputError(f"cannot decode the DICOM pixel data ({name}): {reason}")


def dataset_to_image(ds: Dataset, *, apply_voi: bool = True, voi_index: int = 0) -> np.ndarray:
    """Decode the pixels of a parsed dataset into float32 [0, 1], MONOCHROME2 (bright = dense).

    Order as PS3.3 C.11 defines it: stored values -> modality LUT -> VOI LUT -> presentation
    (MONOCHROME1 is inverted here, after the VOI transform, because its windows are defined on the
    un-inverted values). Without a VOI transform the modality output range is scaled to [0, 1].
    """
    check_pixel_header(ds)
    try:
        raw = ds.pixel_array
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # corrupt codestreams; Rust plugins (pylibjpeg-rle) panic as BaseException
        raise _decode_error(ds, exc) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3:  # colour secondary captures: decoded to RGB by pydicom; use luminance
        if not photometric.startswith("MONOCHROME"):
            raw = raw[..., :3].astype(np.float32).mean(axis=-1)
        else:
            raise BadInputError(f"unexpected pixel array shape {raw.shape}")
        lo, hi = 0.0, float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.clip(raw / hi, 0.0, 1.0).astype(np.float32)
    values = apply_modality_lut(raw, ds).astype(np.float64)
    lo, hi = _output_range_after_modality(ds)
    voi_range = _voi_output_range(ds, voi_index) if apply_voi else None
    if voi_range is not None:
        try:
            values = apply_voi_lut(values, ds, index=voi_index).astype(np.float64)
        except Exception as exc:
            raise BadInputError(f"invalid VOI LUT / window in DICOM: {exc}") from exc
        lo, hi = voi_range
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    image = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0).astype(np.float32)
    if _inverted_presentation(ds, photometric):
        image = 1.0 - image
    padding = _padding_mask(ds, raw)
    if padding is not None:
        image[padding] = 0.0  # outside the detector's image area: background, whatever the polarity
    return image


def _padding_mask(ds: Dataset, raw: np.ndarray) -> np.ndarray | None:
    """Pixels marked as padding (PixelPaddingValue, up to PixelPaddingRangeLimit), in stored values."""
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue is None:
        return None
    try:
        lo = int(ds.PixelPaddingValue)
        hi = int(ds.get("PixelPaddingRangeLimit", lo))
    except (TypeError, ValueError):
        return None
    lo, hi = min(lo, hi), max(lo, hi)
    mask = (raw >= lo) & (raw <= hi)
    return mask if mask.any() else None


def _inverted_presentation(ds: Dataset, photometric: str) -> bool:
    """MONOCHROME1 (minimum = white) is inverted. A MONOCHROME2 image whose Presentation LUT Shape is
    INVERSE is too; DX/MG MONOCHROME1 files carry INVERSE as a restatement, not a second flip."""
    if photometric == "MONOCHROME1":
        return True
    return str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"


def laterality_of(ds: Dataset) -> Laterality | None:
    """ImageLaterality, else series Laterality, else the frame anatomy of enhanced objects."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value  # type: ignore[return-value]
    try:
        value = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality
        if str(value).upper() in ("L", "R"):
            return str(value).upper()  # type: ignore[return-value]
    except (AttributeError, IndexError, KeyError):
        pass
    return None


def view_of(ds: Dataset) -> str | None:
    """'CC', 'MLO', 'other' (a view is named but is neither) or None (no view tags at all)."""
    for item in ds.get("ViewCodeSequence", []) or []:
        code = str(item.get("CodeValue", "")).strip()
        for name, (value, _, _) in VIEW_CODES.items():
            if code == value:
                return name
        if code in _LEGACY_VIEW_CODES:
            return _LEGACY_VIEW_CODES[code]
        meaning = str(item.get("CodeMeaning", "")).lower().replace("-", "").replace(" ", "")
        if "mediolateraloblique" in meaning:
            return "MLO"
        if "craniocaudal" in meaning:
            return "CC"
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if position:
        return _VIEW_POSITION.get(position, "other")
    return "other" if ds.get("ViewCodeSequence") else None
