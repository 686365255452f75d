"""DICOM SEG: masks reference their source image, read back equal with highdicom, and validate."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from models.errors import BadInputError
from models.imaging.dicom import parse_dataset
from models.imaging.dicom_seg import ABNORMAL, SegmentInfo, read_segmentation, write_segmentation
from models.imaging.dicom_write import generate_uid, write_mg_phantom_dicom
from tests.dicom_validation import dciodvfy_report

INFO = SegmentInfo("anomaly", ABNORMAL, "mambo-demo", "1.2")


@pytest.fixture
def mammogram(tmp_path):
    image = np.random.default_rng(1).random((48, 36)).astype(np.float32)
    path = write_mg_phantom_dicom(
        tmp_path / "src.dcm",
        image,
        laterality="L",
        view="CC",
        patient_id="PH7",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
    )
    return parse_dataset(path)


def _mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[5:17, 4:11] = True
    mask[30:33, 20:29] = True
    return mask


@pytest.mark.parametrize("source_kind", ["mammogram", "cr"])
def test_segmentation_reads_back_equal_and_references_its_source(tmp_path, mammogram, source_kind):
    source = mammogram if source_kind == "mammogram" else parse_dataset(get_testdata_file("RG3_UNCR.dcm"))
    mask = _mask((int(source.Rows), int(source.Columns)))
    path = write_segmentation(tmp_path / "seg.dcm", mask, source, INFO)
    back, label, referenced = read_segmentation(path)
    np.testing.assert_array_equal(back, mask)
    assert label == "anomaly" and referenced == source.SOPInstanceUID
    assert dciodvfy_report(path) == []
    ds = parse_dataset(path)
    assert ds.Modality == "SEG" and ds.SyntheticData == "YES"
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    algorithm = ds.SegmentSequence[0]
    assert algorithm.SegmentAlgorithmType == "AUTOMATIC" and algorithm.SegmentAlgorithmName == "mambo-demo"


def test_empty_mask_is_still_a_valid_segmentation(tmp_path, mammogram):
    mask = np.zeros((48, 36), bool)
    path = write_segmentation(tmp_path / "seg.dcm", mask, mammogram, INFO)
    back, _, _ = read_segmentation(path)
    assert not back.any() and back.shape == mask.shape
    assert dciodvfy_report(path) == []


def test_segmentation_refuses_a_mask_off_the_source_grid_or_a_source_without_dicom_identity(tmp_path, mammogram):
    with pytest.raises(BadInputError, match="48x36"):
        write_segmentation(tmp_path / "a.dcm", np.zeros((10, 10), bool), mammogram, INFO)
    with pytest.raises(BadInputError, match="DICOM source"):
        write_segmentation(tmp_path / "b.dcm", np.zeros((10, 10), bool), Dataset(), INFO)
