"""Test inputs as real files: procedural phantoms written as MG DICOMs, with the usual defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from models.imaging.dicom_write import generate_uid, write_mg_phantom_dicom


def phantom_dicom(
    path: str | os.PathLike[str], image: np.ndarray, laterality: str = "R", view: str = "CC", **kwargs: Any
) -> Path:
    """``image`` as a Digital Mammography DICOM; patient "P" and a new study and series unless given."""
    kwargs.setdefault("patient_id", "P")
    kwargs.setdefault("study_uid", generate_uid())
    kwargs.setdefault("series_uid", generate_uid())
    return write_mg_phantom_dicom(path, image, laterality=laterality, view=view, **kwargs)  # type: ignore[arg-type]
