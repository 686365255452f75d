"""Binary masks as DICOM Segmentation objects (built and read with highdicom).

A SEG references the image it was computed on (its SOP instance, in the source's study and patient),
so a viewer or a pipeline overlays it on that image and nothing else. Our sources are 2-D projection
images without a Frame of Reference: the mask is on the source's own pixel grid, and the SEG carries
no Pixel Measures of its own (highdicom cannot read back a SEG whose Pixel Measures lack a Slice
Thickness, which a projection image has none of); the source's spacing applies.

The float anomaly heat map is not a Parametric Map: highdicom 0.28 cannot build one over a source
without a Frame of Reference (its dimension index is left empty). It is written as a Secondary
Capture whose Rescale Slope/Intercept give back the real residual values (`dicom_write`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from models.errors import BadInputError
from models.imaging.dicom import SYNTHETIC_WARNING
from models.imaging.dicom_write import copy_patient_study, set_synthetic_marks
from models.imaging.files import atomic_write

#: SNOMED CT codes (CID 7150 / 7151) of what our masks segment.
ABNORMAL = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
LESION = hd.sr.CodedConcept("52988006", "SCT", "Lesion")

#: CID 7162 algorithm family of every model we serve.
_AI_FAMILY = hd.sr.CodedConcept.from_code(codes.DCM.ArtificialIntelligence)
_SOURCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "PatientOrientation",
    "ImageLaterality",
    "Laterality",
)


@dataclass(frozen=True)
class SegmentInfo:
    """What one mask is: its label and SNOMED type, and the algorithm that made it."""

    label: str
    segment_type: hd.sr.CodedConcept
    model_name: str
    model_version: str


def _algorithm(info: SegmentInfo) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=info.model_name[:64], version=info.model_version[:64], family=_AI_FAMILY
    )


def _reference(source: Dataset) -> Dataset:
    """The source header highdicom needs (no pixels, no Pixel Spacing: see the module docstring)."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns"):
        if keyword not in source:
            raise BadInputError(f"a DICOM SEG needs a DICOM source image with {keyword}; the input has none")
    ref = Dataset()
    copy_patient_study(ref, source)
    for keyword in _SOURCE_KEYWORDS:
        if keyword in source:
            setattr(ref, keyword, source[keyword].value)
    if "SeriesInstanceUID" not in ref:
        raise BadInputError("a DICOM SEG needs the source image's SeriesInstanceUID; the input has none")
    return ref


def write_segmentation(
    path: str | os.PathLike[str],
    mask: np.ndarray,
    source: Dataset,
    info: SegmentInfo,
    *,
    series_number: int = 900,
) -> Path:
    """``mask`` (H x W bool, on ``source``'s pixel grid) as a BINARY SEG in the source's study."""
    return write_segments(path, [mask], source, [info], series_number=series_number)


def write_segments(
    path: str | os.PathLike[str],
    masks: Sequence[np.ndarray],
    source: Dataset,
    infos: Sequence[SegmentInfo],
    *,
    series_number: int = 900,
) -> Path:
    """Several masks (one segment each, numbered from 1 in order; they may overlap) as one BINARY SEG
    in the source's study: inserted lesions are each their own segment, so a reader keeps them apart."""
    if not masks or len(masks) != len(infos):
        raise BadInputError(f"a SEG needs one SegmentInfo per mask, got {len(masks)} masks and {len(infos)} infos")
    ref = _reference(source)
    shape = (int(ref.Rows), int(ref.Columns))
    arrays = [np.asarray(m) for m in masks]
    for m in arrays:
        if m.shape != shape:
            raise BadInputError(f"mask is {m.shape}; the source image is {shape[0]}x{shape[1]}")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=info.label[:64],
            segmented_property_category=ABNORMAL,
            segmented_property_type=info.segment_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(info),
        )
        for n, info in enumerate(infos, 1)
    ]
    first = infos[0]
    what = first.label if len(infos) == 1 else f"{len(infos)} segments"
    pixels = arrays[0].astype(bool) if len(arrays) == 1 else np.stack(arrays, axis=-1).astype(bool)[None]
    seg = hd.seg.Segmentation(
        source_images=[ref],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mammogen",
        manufacturer_model_name=first.model_name[:64],
        software_versions=first.model_version[:64],
        device_serial_number="none",
        series_description=f"{SYNTHETIC_WARNING} {what} mask"[:64],
        content_label=_code_string(first.label if len(infos) == 1 else "segments"),
        content_description=f"{what} by {first.model_name} {first.model_version}"[:64],
        omit_empty_frames=False,
    )
    seg.PatientOrientation = ref.get("PatientOrientation", "")  # General Image, Type 2C without a frame of reference
    set_synthetic_marks(seg)

    def _write(f: BinaryIO) -> None:
        seg.save_as(f, enforce_file_format=True)

    return atomic_write(path, _write)


def _code_string(text: str) -> str:
    """A Content Label (CS): uppercase letters, digits, spaces and underscores, at most 16."""
    return re.sub(r"[^A-Z0-9_]", "", text.upper().replace(" ", "_"))[:16] or "SEGMENT"


def read_segmentation(path: str | os.PathLike[str]) -> tuple[np.ndarray, str, str]:
    """(mask H x W bool, segment label, referenced source SOP instance UID), read with highdicom."""
    seg = hd.seg.segread(path)
    (sop_uid,) = [uid for _, _, uid in seg.get_source_image_uids()]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[sop_uid], segment_numbers=[1])
    label = seg.get_segment_description(1).segment_label
    return np.asarray(pixels[0, :, :, 0]).astype(bool), str(label), str(sop_uid)


def read_segments(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[str], str]:
    """Every segment of a SEG: (masks H x W bool in segment order, their labels, the referenced source
    SOP instance UID), read with highdicom."""
    seg = hd.seg.segread(path)
    (sop_uid,) = [uid for _, _, uid in seg.get_source_image_uids()]
    numbers = sorted(int(item.SegmentNumber) for item in seg.SegmentSequence)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[sop_uid], segment_numbers=numbers)
    masks = [np.asarray(pixels[0, :, :, i]).astype(bool) for i in range(len(numbers))]
    labels = [str(seg.get_segment_description(n).segment_label) for n in numbers]
    return masks, labels, str(sop_uid)
