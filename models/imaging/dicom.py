"""DICOM in and out: decode any projection X-ray to a [0, 1] MONOCHROME2 image, and write our images.

Reading (pydicom 3): pixel data through pydicom's decoder plugins, then the modality LUT (rescale or
LUT sequence), then the VOI LUT (LINEAR / LINEAR_EXACT / SIGMOID windows or a VOI LUT sequence), then
MONOCHROME1 inverted, so every image is bright tissue on a dark background in [0, 1]. Compressed
transfer syntaxes covered by the installed plugins (``decodable_syntaxes()`` lists them at run time):
RLE Lossless (pydicom, pylibjpeg-rle), Deflated, JPEG Baseline/Extended (Pillow), JPEG 2000 lossless
and lossy (openjpeg, Pillow), HTJ2K (openjpeg), JPEG Lossless .4.57/.4.70 (RSNA's exports) and
JPEG-LS .4.80/.4.81 (python-gdcm). A syntax without a plugin (MPEG/HEVC video, JPEG XL, ...) is
refused with an UnsupportedMediaError that names it.

Writing: every file we emit is marked for what it is. Generated images are Secondary Capture
(``ConversionType=SYN``, ``ImageType=DERIVED\\SECONDARY``, a "SYNTHETIC - NOT FOR DIAGNOSTIC USE"
series description, a fictional de-identified patient, the model and version in
``ContributingEquipmentSequence``); derived images (super-resolution, anomaly maps) keep the input's
study and patient with a new series; phantoms are Digital Mammography X-Ray images (For Presentation)
of a fictional phantom patient so ingestion and the API see what a real MG export looks like.
All writes are atomic.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from models.errors import BadInputError, PayloadTooLargeError, UnsupportedMediaError
from models.imaging.files import atomic_write

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
        raise BadInputError(f"cannot decode DICOM pixel data: {type(exc).__name__}: {exc}") from exc
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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _now() -> tuple[str, str]:
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _pixels(image01: np.ndarray, bits_stored: int) -> np.ndarray:
    img = np.asarray(image01, dtype=np.float32)  # float32 like to_uint16: DICOM and PNG16 pixels agree
    if img.ndim != 2 or img.size == 0:
        raise BadInputError(f"DICOM writers take a non-empty 2-D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise BadInputError("image contains NaN or infinite values")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 8..16, got {bits_stored}")
    return np.round(np.clip(img, 0.0, 1.0) * np.float32(2**bits_stored - 1)).astype(np.uint16)


def _new_dataset(sop_class: UID, sop_instance: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    date, time = _now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    return ds


def _set_fictional_patient(ds: Dataset, patient_id: str, name: str) -> None:
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "fictional patient: no real person (mammogen)"


def _set_new_study(ds: Dataset, study_uid: str | None) -> None:
    date, time = _now()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate, ds.StudyTime = date, time
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""


def _set_series(ds: Dataset, *, series_uid: str | None, modality: str, description: str, number: int = 1) -> None:
    date, time = _now()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = number
    ds.SeriesDescription = description[:64]
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time


def _set_image_pixels(ds: Dataset, image01: np.ndarray, bits_stored: int) -> None:
    px = _pixels(image01, bits_stored)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = px.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = px.astype("<u2").tobytes()


def _patient_orientation(laterality: str | None, view: str | None, chest_wall: str | None) -> list[str] | str:
    """Row and column directions (PS3.3 C.7.6.1.1.1); empty when laterality or view is unknown.

    Standard display puts the chest wall of a left breast on the left (rows run anterior) and of a
    right breast on the right (rows run posterior); ``chest_wall`` overrides that for images we flipped.
    """
    if laterality not in ("L", "R") or view not in ("CC", "MLO"):
        return ""
    wall = chest_wall or ("left" if laterality == "L" else "right")
    row = "A" if wall == "left" else "P"
    down = ("L" if laterality == "R" else "R") if view == "CC" else ("FL" if laterality == "R" else "FR")
    return [row, down]


def _set_laterality_view(
    ds: Dataset, laterality: str | None, view: str | None, chest_wall: str | None, *, mammography_iod: bool = False
) -> None:
    """ImageLaterality, ViewPosition, ViewCodeSequence and PatientOrientation (in Secondary Capture
    these are standard extended attributes: consumers still find laterality and view there).

    Series ``Laterality`` is sent empty only when ImageLaterality is unknown (General Series, Type 2C).
    The mammography IOD requires ViewModifierCodeSequence (Type 2, may be empty); SC forbids it empty.
    """
    if laterality is not None:
        if laterality not in ("L", "R"):
            raise BadInputError(f"laterality must be 'L' or 'R', got {laterality!r}")
        ds.ImageLaterality = laterality
    else:
        ds.Laterality = ""
    if view is not None:
        if view not in VIEW_CODES:
            raise BadInputError(f"view must be 'CC' or 'MLO', got {view!r}")
        ds.ViewPosition = view
        value, scheme, meaning = VIEW_CODES[view]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
        if mammography_iod:
            code.ViewModifierCodeSequence = DicomSequence([])
        ds.ViewCodeSequence = DicomSequence([code])
    ds.PatientOrientation = _patient_orientation(laterality, view, chest_wall)


def _set_contributing_equipment(ds: Dataset, model_name: str, model_version: str) -> None:
    """IHE AIR style: the algorithm that made the pixels, with its checkpoint version."""
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        "Newcode1",
        "99IHE",
        "Processing Algorithm",
    )
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    item.Manufacturer = "mammogen"
    item.ManufacturerModelName = model_name[:64]
    item.SoftwareVersions = model_version[:64]
    item.ContributionDescription = f"image generated by {model_name} {model_version}"[:64]
    date, time = _now()
    item.ContributionDateTime = date + time
    ds.ContributingEquipmentSequence = DicomSequence([item])
    ds.SoftwareVersions = model_version[:64]


def _set_sc_equipment(ds: Dataset, model_name: str, model_version: str) -> None:
    ds.Manufacturer = "mammogen"
    ds.ManufacturerModelName = model_name[:64]
    ds.SoftwareVersions = model_version[:64]
    ds.ConversionType = "SYN"  # PS3.3 C.8.6.1: Synthetic Image
    ds.SecondaryCaptureDeviceManufacturer = "mammogen"
    ds.SecondaryCaptureDeviceManufacturerModelName = model_name[:64]
    ds.SecondaryCaptureDeviceSoftwareVersions = model_version[:64]


def _save(ds: FileDataset, path: str | os.PathLike[str]) -> Path:
    def _write(f: BinaryIO) -> None:
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        f.write(buf.getvalue())

    return atomic_write(path, _write)


def write_synthetic_dicom(
    path: str | os.PathLike[str],
    image01: np.ndarray,
    *,
    model_name: str,
    model_version: str,
    laterality: Laterality | None = None,
    view: View | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    seed: int | None = None,
    extra_description: str = "",
    chest_wall: Literal["left", "right"] | None = None,
    patient_id: str | None = None,
) -> Path:
    """A generated image as a 16-bit Secondary Capture (Modality MG, ConversionType SYN).

    ``chest_wall`` states where the chest wall is in ``image01`` (sets PatientOrientation); by
    default the standard display for the laterality is assumed. The seed is recorded so the image
    can be regenerated from the same bundle.
    """
    sop = generate_uid()
    ds = _new_dataset(SECONDARY_CAPTURE, sop)
    _set_fictional_patient(ds, patient_id or f"SYN-{sop[-12:]}", "SYNTHETIC^MAMMOGEN")
    _set_new_study(ds, study_uid)
    desc = f"{SYNTHETIC_WARNING} {extra_description}".strip()
    _set_series(ds, series_uid=series_uid, modality="MG", description=desc)
    _set_sc_equipment(ds, model_name, model_version)
    _set_contributing_equipment(ds, model_name, model_version)
    ds.InstanceNumber = instance_number
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    comment = f"{SYNTHETIC_WARNING}; model {model_name} {model_version}"
    if seed is not None:
        comment += f"; seed {seed}"
    ds.ImageComments = comment
    ds.DerivationDescription = f"generated by {model_name} {model_version}"[:1024]
    _set_laterality_view(ds, laterality, view, chest_wall)
    _set_image_pixels(ds, image01, 16)
    return _save(ds, path)


def write_derived_dicom(
    path: str | os.PathLike[str],
    image01: np.ndarray,
    source: Dataset,
    *,
    description: str,
    model_name: str,
    model_version: str,
    series_uid: str | None = None,
    chest_wall: Literal["left", "right"] | None = None,
    pixel_spacing_mm: float | None = None,
) -> Path:
    """An image computed from ``source`` (super-resolution, anomaly map): same study and patient,
    new series and SOP instance, ImageType DERIVED, SourceImageSequence and DerivationDescription.

    ``pixel_spacing_mm`` is the output's spacing (a 4x super-resolution of a 0.4 mm image: 0.1)."""
    sop = generate_uid()
    ds = _new_dataset(SECONDARY_CAPTURE, sop)
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDescription",
    ):
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    for keyword, default in (
        ("PatientName", ""),
        ("PatientID", ""),
        ("PatientBirthDate", ""),
        ("PatientSex", ""),
        ("StudyDate", ""),
        ("StudyTime", ""),
        ("StudyID", ""),
        ("AccessionNumber", ""),
        ("ReferringPhysicianName", ""),
    ):
        if keyword not in ds:
            setattr(ds, keyword, default)
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    desc = f"{SYNTHETIC_WARNING} {description}".strip()
    _set_series(ds, series_uid=series_uid, modality=str(source.get("Modality", "MG") or "MG"), description=desc)
    _set_sc_equipment(ds, model_name, model_version)
    _set_contributing_equipment(ds, model_name, model_version)
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.DerivationDescription = f"{description} by {model_name} {model_version}"[:1024]
    ds.ImageComments = f"{SYNTHETIC_WARNING}; {description}"[:10240]
    if "SOPInstanceUID" in source:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.get("SOPClassUID", SECONDARY_CAPTURE)
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceImageSequence = DicomSequence([ref])
    laterality = laterality_of(source)
    view = view_of(source)
    _set_laterality_view(ds, laterality, view if view in VIEW_CODES else None, chest_wall)
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [float(pixel_spacing_mm), float(pixel_spacing_mm)]
    _set_image_pixels(ds, image01, 16)
    return _save(ds, path)


def write_mg_phantom_dicom(
    path: str | os.PathLike[str],
    image01: np.ndarray,
    *,
    laterality: Laterality,
    view: View,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    instance_number: int = 1,
    bits_stored: int = 14,
    pixel_spacing_mm: float = 0.1,
    seed: int | None = None,
    description: str = "",
    chest_wall: Literal["left", "right"] | None = None,
) -> Path:
    """A procedural phantom as a Digital Mammography X-Ray Image (For Presentation), 12-16 bits.

    Real MG exports are this IOD, so ingestion, the API and the orientation code are exercised on
    the same tags (ImageLaterality, ViewPosition, ViewCodeSequence, VOI window) they will meet.
    """
    if not 12 <= bits_stored <= 16:
        raise ValueError(f"phantom bits_stored must be 12..16, got {bits_stored}")
    sop = generate_uid()
    ds = _new_dataset(DIGITAL_MAMMOGRAPHY_PRESENTATION, sop)
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    _set_new_study(ds, study_uid)
    ds.StudyDescription = "procedural mammography phantom (mammogen)"
    _set_series(
        ds, series_uid=series_uid, modality="MG", description=f"{PHANTOM_WARNING} {description}".strip(), number=1
    )
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "mammogen"
    ds.ManufacturerModelName = "procedural phantom"
    ds.SoftwareVersions = pydicom.__version__ if seed is None else f"seed {seed}"
    ds.InstanceNumber = instance_number
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    # A full-range linear window (identity on [0, 2**bits - 1]): the VOI module is required here.
    ds.WindowCenter = 2 ** (bits_stored - 1)
    ds.WindowWidth = 2**bits_stored
    ds.VOILUTFunction = "LINEAR"
    # DX anatomy imaged + mammography image modules.
    breast = Dataset()
    breast.CodeValue, breast.CodingSchemeDesignator, breast.CodeMeaning = "76752008", "SCT", "Breast"
    ds.AnatomicRegionSequence = DicomSequence([breast])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.OrganExposed = "BREAST"
    # DX detector (simulated: no physical detector data is claimed).
    ds.DetectorType = ""
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.BodyPartExamined = "BREAST"
    comment = PHANTOM_WARNING if seed is None else f"{PHANTOM_WARNING}; seed {seed}"
    ds.ImageComments = comment
    _set_laterality_view(ds, laterality, view, chest_wall, mammography_iod=True)
    _set_image_pixels(ds, image01, bits_stored)
    return _save(ds, path)


def write_dualview_pair(
    out_dir: str | os.PathLike[str],
    cc01: np.ndarray,
    mlo01: np.ndarray,
    *,
    laterality: Laterality,
    model_name: str,
    model_version: str,
    seed: int | None = None,
    chest_wall: Literal["left", "right"] | None = None,
    names: Sequence[str] = ("cc.dcm", "mlo.dcm"),
) -> tuple[Path, Path]:
    """CC and MLO of one generated breast: two instances of ONE study and ONE series."""
    study, series = generate_uid(), generate_uid()
    patient = f"SYN-{study[-12:]}"
    out = Path(out_dir)
    paths = []
    for number, (image, view, name) in enumerate(((cc01, "CC", names[0]), (mlo01, "MLO", names[1])), start=1):
        paths.append(
            write_synthetic_dicom(
                out / name,
                image,
                model_name=model_name,
                model_version=model_version,
                laterality=laterality,
                view=view,  # type: ignore[arg-type]
                study_uid=study,
                series_uid=series,
                instance_number=number,
                seed=seed,
                extra_description="dual-view pair",
                chest_wall=chest_wall,
                patient_id=patient,
            )
        )
    return paths[0], paths[1]
