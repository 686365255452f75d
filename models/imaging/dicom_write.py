"""Writing our images as DICOM, each object marked for what it is.

Two image IODs, one set of marks:

- **Secondary Capture** (``dicom``): ``ConversionType=SYN``. Built here rather than with highdicom's
  ``SCImage``: that class accepts only single-letter PatientOrientation values, and an MLO view needs
  the oblique ``FL``/``FR`` column direction.
- **Digital Mammography X-Ray Image, For Presentation** (``dicom-mg``): what mammography loaders read
  (ImageLaterality, ViewPosition and ViewCodeSequence, ImagerPixelSpacing / PixelSpacing, BitsStored,
  PresentationLUTShape, a VOI window). Phantoms use the same IOD so ingestion sees a real export's tags.

Every generated or model-derived image carries Synthetic Data (0008,001C) = YES, ImageType DERIVED,
a "SYNTHETIC - NOT FOR DIAGNOSTIC USE" series description and image comment, and the model name and
version in ContributingEquipmentSequence (IHE AIR style), so it is never mistaken for an acquisition.
Generated images get a fictional de-identified patient and a new study; derived images
(super-resolution, anomaly maps) join the input's patient and study in a new series with a
SourceImageSequence. Segmentations are in `models.imaging.dicom_seg`. All writes are atomic.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from models.errors import BadInputError
from models.imaging.dicom import (
    DIGITAL_MAMMOGRAPHY_PRESENTATION,
    PHANTOM_WARNING,
    SECONDARY_CAPTURE,
    SYNTHETIC_WARNING,
    VIEW_CODES,
    Laterality,
    View,
    laterality_of,
    view_of,
)
from models.imaging.files import atomic_write

#: The two image IODs our writers emit: Secondary Capture or Digital Mammography For Presentation.
DicomIod = Literal["sc", "mg"]
ChestWall = Literal["left", "right"]

#: Used for MG images when the bundle records no pixel spacing (the image comment then says so).
NOMINAL_PIXEL_SPACING_MM = 0.1

#: Patient and study attributes a derived object copies from its source, and the Type 2 ones it must
#: send (empty) when the source lacks them.
_PATIENT_STUDY = (
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
)
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------
def _ds(value: float) -> str:
    """A decimal string within DS's 16 characters (0.05000000000000001 is 19)."""
    return f"{float(value):.8g}"


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


def copy_patient_study(ds: Dataset, source: Dataset) -> None:
    """Join ``source``'s patient and study (derived objects, segmentations); Type 2 gaps sent empty."""
    for keyword in _PATIENT_STUDY:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()


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


def patient_orientation(laterality: str | None, view: str | None, chest_wall: str | None) -> list[str] | str:
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
    ds.PatientOrientation = patient_orientation(laterality, view, chest_wall)


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


def _set_equipment(ds: Dataset, model_name: str, model_version: str) -> None:
    ds.Manufacturer = "mammogen"
    ds.ManufacturerModelName = model_name[:64]
    ds.SoftwareVersions = model_version[:64]
    _set_contributing_equipment(ds, model_name, model_version)


def set_synthetic_marks(ds: Dataset) -> None:
    """Synthetic Data (0008,001C, SOP Common): some or all of the content was made by a model."""
    ds.SyntheticData = "YES"


def _set_model_marks(
    ds: Dataset, *, model_name: str, model_version: str, what: str, comment: str, image_type: Sequence[str]
) -> None:
    """The marks every generated or model-derived image carries, whichever IOD."""
    set_synthetic_marks(ds)
    _set_equipment(ds, model_name, model_version)
    ds.ImageType = list(image_type)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.DerivationDescription = f"{what} by {model_name} {model_version}"[:1024]
    ds.ImageComments = f"{SYNTHETIC_WARNING}; {comment}"[:10240]


def _set_sc_conversion(ds: Dataset, model_name: str, model_version: str) -> None:
    ds.ConversionType = "SYN"  # PS3.3 C.8.6.1: Synthetic Image
    ds.SecondaryCaptureDeviceManufacturer = "mammogen"
    ds.SecondaryCaptureDeviceManufacturerModelName = model_name[:64]
    ds.SecondaryCaptureDeviceSoftwareVersions = model_version[:64]


def _set_source_reference(ds: Dataset, source: Dataset) -> None:
    if "SOPInstanceUID" in source:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.get("SOPClassUID", SECONDARY_CAPTURE)
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceImageSequence = DicomSequence([ref])


def _set_mg_presentation(
    ds: Dataset, image01: np.ndarray, *, bits_stored: int, pixel_spacing_mm: float, laterality: str, view: str,
    chest_wall: str | None,
) -> None:  # fmt: skip
    """The Digital Mammography (For Presentation) modules past patient, study, series and equipment:
    DX anatomy, DX image, DX detector, mammography image, VOI LUT and the pixels."""
    if not 12 <= bits_stored <= 16:
        raise ValueError(f"MG bits_stored must be 12..16, got {bits_stored}")
    ds.PresentationIntentType = "FOR PRESENTATION"
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
    breast = Dataset()
    breast.CodeValue, breast.CodingSchemeDesignator, breast.CodeMeaning = "76752008", "SCT", "Breast"
    ds.AnatomicRegionSequence = DicomSequence([breast])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.OrganExposed = "BREAST"
    ds.DetectorType = ""  # no physical detector is claimed
    ds.ImagerPixelSpacing = ds.PixelSpacing = [_ds(pixel_spacing_mm)] * 2
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.BodyPartExamined = "BREAST"
    _set_laterality_view(ds, laterality, view, chest_wall, mammography_iod=True)
    _set_image_pixels(ds, image01, bits_stored)


def _save(ds: FileDataset, path: str | os.PathLike[str]) -> Path:
    def _write(f: BinaryIO) -> None:
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        f.write(buf.getvalue())

    return atomic_write(path, _write)


# ---------------------------------------------------------------------------------------------
# Generated images
# ---------------------------------------------------------------------------------------------
def _generated(
    sop_class: UID, *, patient_id: str | None, study_uid: str | None, series_uid: str | None, description: str
) -> FileDataset:
    sop = generate_uid()
    ds = _new_dataset(sop_class, sop)
    _set_fictional_patient(ds, patient_id or f"SYN-{sop[-12:]}", "SYNTHETIC^MAMMOGEN")
    _set_new_study(ds, study_uid)
    _set_series(ds, series_uid=series_uid, modality="MG", description=f"{SYNTHETIC_WARNING} {description}".strip())
    return ds


def _generated_comment(model_name: str, model_version: str, seed: int | None) -> str:
    comment = f"model {model_name} {model_version}"
    return comment if seed is None else f"{comment}; seed {seed}"


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
    chest_wall: ChestWall | None = None,
    patient_id: str | None = None,
) -> Path:
    """A generated image as a 16-bit Secondary Capture (Modality MG, ConversionType SYN).

    ``chest_wall`` states where the chest wall is in ``image01`` (sets PatientOrientation); by
    default the standard display for the laterality is assumed. The seed is recorded so the image
    can be regenerated from the same bundle.
    """
    ds = _generated(
        SECONDARY_CAPTURE,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        description=extra_description,
    )
    _set_model_marks(
        ds,
        model_name=model_name,
        model_version=model_version,
        what="generated",
        comment=_generated_comment(model_name, model_version, seed),
        image_type=["DERIVED", "SECONDARY"],
    )
    _set_sc_conversion(ds, model_name, model_version)
    ds.InstanceNumber = instance_number
    _set_laterality_view(ds, laterality, view, chest_wall)
    _set_image_pixels(ds, image01, 16)
    return _save(ds, path)


def write_synthetic_mg(
    path: str | os.PathLike[str],
    image01: np.ndarray,
    *,
    model_name: str,
    model_version: str,
    laterality: Laterality,
    view: View,
    pixel_spacing_mm: float | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    seed: int | None = None,
    extra_description: str = "",
    chest_wall: ChestWall | None = None,
    patient_id: str | None = None,
    bits_stored: int = 16,
) -> Path:
    """A generated image as Digital Mammography X-Ray (For Presentation), marked synthetic.

    ``pixel_spacing_mm`` is the bundle's native spacing; without one a nominal 0.1 mm is written and
    the image comment says that it is nominal.
    """
    ds = _generated(
        DIGITAL_MAMMOGRAPHY_PRESENTATION,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        description=extra_description,
    )
    comment = _generated_comment(model_name, model_version, seed)
    if pixel_spacing_mm is None:
        comment += f"; nominal pixel spacing {NOMINAL_PIXEL_SPACING_MM} mm (the bundle records none)"
    _set_model_marks(
        ds,
        model_name=model_name,
        model_version=model_version,
        what="generated",
        comment=comment,
        image_type=["DERIVED", "PRIMARY"],
    )
    ds.InstanceNumber = instance_number
    _set_mg_presentation(
        ds,
        image01,
        bits_stored=bits_stored,
        pixel_spacing_mm=float(pixel_spacing_mm or NOMINAL_PIXEL_SPACING_MM),
        laterality=laterality,
        view=view,
        chest_wall=chest_wall,
    )
    return _save(ds, path)


def write_generated_mambo(
    out_dir: str | os.PathLike[str],
    stem: str,
    image01: np.ndarray,
    formats: Sequence[str],
    *,
    model_name: str,
    model_version: str,
    laterality: Laterality,
    view: View | None,
    seed: int | None,
    chest_wall: ChestWall | None,
    pixel_spacing_mm: float | None = None,
    description: str = "MAMBO",
) -> list[Path]:
    """A generated MAMBO image in the DICOM formats asked: ``<stem>.dcm`` (``dicom``, Secondary Capture) and
    ``<stem>_mg.dcm`` (``dicom-mg``, Digital Mammography; needs ``view``, which the model does not condition
    on: the request states what to record). The service's generate job and `mammogen generate` both write
    through here."""
    marks = {
        "model_name": model_name,
        "model_version": model_version,
        "laterality": laterality,
        "view": view,
        "seed": seed,
        "chest_wall": chest_wall,
        "extra_description": description,
    }
    out, paths = Path(out_dir), []
    if "dicom" in formats:
        paths.append(write_synthetic_dicom(out / f"{stem}.dcm", image01, **marks))  # type: ignore[arg-type]
    if "dicom-mg" in formats:
        if view is None:
            raise BadInputError("dicom-mg output of a MAMBO image needs view (CC or MLO) to record")
        paths.append(write_synthetic_mg(out / f"{stem}_mg.dcm", image01, pixel_spacing_mm=pixel_spacing_mm, **marks))  # type: ignore[arg-type]
    return paths


def write_dualview_pair(
    out_dir: str | os.PathLike[str],
    cc01: np.ndarray,
    mlo01: np.ndarray,
    *,
    laterality: Laterality,
    model_name: str,
    model_version: str,
    seed: int | None = None,
    chest_wall: ChestWall | None = None,
    names: Sequence[str] = ("cc.dcm", "mlo.dcm"),
    iod: DicomIod = "sc",
    pixel_spacing_mm: float | None = None,
) -> tuple[Path, Path]:
    """CC and MLO of one generated breast: two instances of ONE study and ONE series (SC or MG)."""
    study, series = generate_uid(), generate_uid()
    patient = f"SYN-{study[-12:]}"
    out = Path(out_dir)
    paths = []
    for number, (image, view, name) in enumerate(((cc01, "CC", names[0]), (mlo01, "MLO", names[1])), start=1):
        common = {
            "model_name": model_name,
            "model_version": model_version,
            "laterality": laterality,
            "view": view,
            "study_uid": study,
            "series_uid": series,
            "instance_number": number,
            "seed": seed,
            "extra_description": "dual-view pair",
            "chest_wall": chest_wall,
            "patient_id": patient,
        }
        if iod == "mg":
            paths.append(write_synthetic_mg(out / name, image, pixel_spacing_mm=pixel_spacing_mm, **common))  # type: ignore[arg-type]
        else:
            paths.append(write_synthetic_dicom(out / name, image, **common))  # type: ignore[arg-type]
    return paths[0], paths[1]


# ---------------------------------------------------------------------------------------------
# Images derived from an input
# ---------------------------------------------------------------------------------------------
def _derived(sop_class: UID, source: Dataset, *, series_uid: str | None, description: str) -> FileDataset:
    ds = _new_dataset(sop_class, generate_uid())
    copy_patient_study(ds, source)
    modality = "MG" if sop_class == DIGITAL_MAMMOGRAPHY_PRESENTATION else str(source.get("Modality", "MG") or "MG")
    _set_series(ds, series_uid=series_uid, modality=modality, description=f"{SYNTHETIC_WARNING} {description}".strip())
    ds.InstanceNumber = 1
    _set_source_reference(ds, source)
    return ds


def write_derived_dicom(
    path: str | os.PathLike[str],
    image01: np.ndarray,
    source: Dataset,
    *,
    description: str,
    model_name: str,
    model_version: str,
    series_uid: str | None = None,
    chest_wall: ChestWall | None = None,
    pixel_spacing_mm: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """An image computed from ``source`` (super-resolution, anomaly map) as Secondary Capture: same
    study and patient, new series and SOP instance, ImageType DERIVED, SourceImageSequence.

    ``pixel_spacing_mm`` is the output's spacing (a 4x super-resolution of a 0.4 mm image: 0.1).
    ``value_range`` (lo, hi): what [0, 1] stands for, written as the modality LUT (Rescale Slope and
    Intercept), so a reader recovers the real values of a float map (the anomaly residual).
    """
    ds = _derived(SECONDARY_CAPTURE, source, series_uid=series_uid, description=description)
    _set_model_marks(
        ds,
        model_name=model_name,
        model_version=model_version,
        what=description,
        comment=description,
        image_type=["DERIVED", "SECONDARY"],
    )
    _set_sc_conversion(ds, model_name, model_version)
    view = view_of(source)
    _set_laterality_view(ds, laterality_of(source), view if view in VIEW_CODES else None, chest_wall)
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [_ds(pixel_spacing_mm)] * 2
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        ds.RescaleIntercept = f"{lo:.10g}"
        ds.RescaleSlope = f"{(hi - lo) / 65535 if hi > lo else 1.0:.10g}"
        ds.RescaleType = "US"
    _set_image_pixels(ds, image01, 16)
    return _save(ds, path)


def write_derived_mg(
    path: str | os.PathLike[str],
    image01: np.ndarray,
    source: Dataset,
    *,
    description: str,
    model_name: str,
    model_version: str,
    pixel_spacing_mm: float | None = None,
    series_uid: str | None = None,
    chest_wall: ChestWall | None = None,
    laterality: Laterality | None = None,
    view: View | None = None,
) -> Path:
    """A mammogram computed from ``source`` (super-resolution) as Digital Mammography For Presentation.

    Laterality and view come from the source unless given; the IOD needs both, so an input that
    names neither is refused with a BadInputError (use the Secondary Capture format for it).
    """
    lat = laterality or laterality_of(source)
    found = view_of(source)
    v = view or (found if found in VIEW_CODES else None)
    if lat is None or v is None:
        raise BadInputError(
            "a mammography (dicom-mg) output needs the input's laterality and CC/MLO view; this input names "
            f"{'no laterality' if lat is None else 'laterality ' + lat} and "
            f"{'no CC/MLO view' if v is None else 'view ' + v}: ask for 'dicom' (Secondary Capture) instead"
        )
    ds = _derived(DIGITAL_MAMMOGRAPHY_PRESENTATION, source, series_uid=series_uid, description=description)
    comment = description
    if pixel_spacing_mm is None:
        comment += f"; nominal pixel spacing {NOMINAL_PIXEL_SPACING_MM} mm (the input records none)"
    _set_model_marks(
        ds,
        model_name=model_name,
        model_version=model_version,
        what=description,
        comment=comment,
        image_type=["DERIVED", "PRIMARY"],
    )
    _set_mg_presentation(
        ds,
        image01,
        bits_stored=16,
        pixel_spacing_mm=float(pixel_spacing_mm or NOMINAL_PIXEL_SPACING_MM),
        laterality=lat,
        view=v,
        chest_wall=chest_wall,
    )
    return _save(ds, path)


# ---------------------------------------------------------------------------------------------
# Phantoms
# ---------------------------------------------------------------------------------------------
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
    chest_wall: ChestWall | None = None,
) -> Path:
    """A procedural phantom as a Digital Mammography X-Ray Image (For Presentation), 12-16 bits.

    Real MG exports are this IOD, so ingestion, the API and the orientation code are exercised on
    the same tags (ImageLaterality, ViewPosition, ViewCodeSequence, VOI window) they will meet.
    """
    ds = _new_dataset(DIGITAL_MAMMOGRAPHY_PRESENTATION, generate_uid())
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    _set_new_study(ds, study_uid)
    ds.StudyDescription = "procedural mammography phantom (mammogen)"
    _set_series(
        ds, series_uid=series_uid, modality="MG", description=f"{PHANTOM_WARNING} {description}".strip(), number=1
    )
    ds.Manufacturer = "mammogen"
    ds.ManufacturerModelName = "procedural phantom"
    ds.SoftwareVersions = pydicom.__version__ if seed is None else f"seed {seed}"
    ds.InstanceNumber = instance_number
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = PHANTOM_WARNING if seed is None else f"{PHANTOM_WARNING}; seed {seed}"
    _set_mg_presentation(
        ds,
        image01,
        bits_stored=bits_stored,
        pixel_spacing_mm=pixel_spacing_mm,
        laterality=laterality,
        view=view,
        chest_wall=chest_wall,
    )
    return _save(ds, path)


#: Writers by IOD, for callers that pick the object from an output format.
DERIVED_WRITERS: dict[DicomIod, Callable[..., Path]] = {"sc": write_derived_dicom, "mg": write_derived_mg}
