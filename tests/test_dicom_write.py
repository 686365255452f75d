"""DICOM writers: every kind of file we emit is valid (dciodvfy), marked synthetic, and round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from models.errors import BadInputError
from models.imaging.dicom import DIGITAL_MAMMOGRAPHY_PRESENTATION, SECONDARY_CAPTURE, SYNTHETIC_WARNING, parse_dataset
from models.imaging.dicom_write import (
    NOMINAL_PIXEL_SPACING_MM,
    generate_uid,
    write_derived_dicom,
    write_derived_mg,
    write_dualview_pair,
    write_mg_phantom_dicom,
    write_synthetic_dicom,
    write_synthetic_mg,
)
from models.imaging.readers import read_image
from models.intensity import to_uint16
from tests.dicom_validation import dciodvfy_report


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((40, 30)).astype(np.float32)


def _all_kinds(tmp_path: Path, image: np.ndarray) -> dict[str, Path]:
    paths = {
        "synthetic": write_synthetic_dicom(
            tmp_path / "syn.dcm", image, model_name="mambo-demo", model_version="1.0", laterality="L", view="CC"
        ),
        "synthetic_no_laterality": write_synthetic_dicom(
            tmp_path / "syn0.dcm", image, model_name="mambo-demo", model_version="1.0"
        ),
        "phantom": write_mg_phantom_dicom(
            tmp_path / "ph.dcm",
            image,
            laterality="R",
            view="MLO",
            patient_id="PH0001",
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            bits_stored=12,
        ),
    }
    paths["derived"] = write_derived_dicom(
        tmp_path / "der.dcm",
        image,
        parse_dataset(paths["phantom"]),
        description="super-resolution x2",
        model_name="mambo-demo",
        model_version="1.0",
        pixel_spacing_mm=0.05,
    )
    paths["derived_from_cr"] = write_derived_dicom(
        tmp_path / "der_cr.dcm",
        image,
        parse_dataset(get_testdata_file("RG3_UNCR.dcm")),
        description="anomaly map",
        model_name="mambo-demo",
        model_version="1.0",
    )
    paths["pair_cc"], paths["pair_mlo"] = write_dualview_pair(
        tmp_path / "pair", image, image[::-1], laterality="R", model_name="dualview-demo", model_version="1.0"
    )
    paths["mg"] = write_synthetic_mg(
        tmp_path / "mg.dcm", image, model_name="mambo-demo", model_version="1.0", laterality="L", view="MLO", seed=3
    )
    paths["mg_pair_cc"], paths["mg_pair_mlo"] = write_dualview_pair(
        tmp_path / "mgpair", image, image[::-1], laterality="L", model_name="dv", model_version="1.0", iod="mg"
    )
    paths["derived_mg"] = write_derived_mg(
        tmp_path / "der_mg.dcm",
        image,
        parse_dataset(paths["phantom"]),
        description="super-resolution x2",
        model_name="mambo-demo",
        model_version="1.0",
        pixel_spacing_mm=0.05,
    )
    paths["heat_rescaled"] = write_derived_dicom(
        tmp_path / "heat.dcm",
        image,
        parse_dataset(paths["phantom"]),
        description="anomaly heat map",
        model_name="mambo-demo",
        model_version="1.0",
        value_range=(0.0, 0.37),
    )
    return paths


def test_every_written_kind_passes_dciodvfy_without_errors(tmp_path, image):
    for kind, path in _all_kinds(tmp_path, image).items():
        assert dciodvfy_report(path) == [], kind


def test_synthetic_image_round_trips_16bit_pixels_and_is_marked(tmp_path, image):
    path = write_synthetic_dicom(
        tmp_path / "a.dcm", image, model_name="mambo-demo", model_version="2.3", laterality="R", view="MLO", seed=42
    )
    ds = parse_dataset(path)
    assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.Modality == "MG"
    assert ds.ConversionType == "SYN" and list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert SYNTHETIC_WARNING in ds.SeriesDescription and ds.BurnedInAnnotation == "NO"
    assert ds.PatientIdentityRemoved == "YES"
    equipment = ds.ContributingEquipmentSequence[0]
    assert equipment.ManufacturerModelName == "mambo-demo" and equipment.SoftwareVersions == "2.3"
    assert ds.BitsStored == 16 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.ImageLaterality == "R" and ds.ViewPosition == "MLO"
    assert ds.ViewCodeSequence[0].CodeValue == "399368009"
    assert list(ds.PatientOrientation) == ["P", "FL"]
    assert "seed 42" in ds.ImageComments
    np.testing.assert_array_equal(ds.pixel_array, to_uint16(image))  # same pixels as the 16-bit PNG
    back, info = read_image(path)
    np.testing.assert_allclose(back, image, atol=0.5 / 65535 + 1e-7)
    assert (info.laterality, info.view) == ("R", "MLO")


def test_chest_wall_argument_sets_patient_orientation_of_flipped_images(tmp_path, image):
    path = write_synthetic_dicom(
        tmp_path / "a.dcm", image, model_name="m", model_version="1", laterality="R", view="CC", chest_wall="left"
    )
    assert list(parse_dataset(path).PatientOrientation) == ["A", "L"]


def test_phantom_is_digital_mammography_with_requested_bit_depth(tmp_path, image):
    for bits in (12, 14, 16):
        path = write_mg_phantom_dicom(
            tmp_path / f"p{bits}.dcm",
            image,
            laterality="L",
            view="CC",
            patient_id="PH1",
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            bits_stored=bits,
        )
        ds = parse_dataset(path)
        assert ds.SOPClassUID == DIGITAL_MAMMOGRAPHY_PRESENTATION and ds.Modality == "MG"
        assert ds.BitsStored == bits and int(ds.pixel_array.max()) <= 2**bits - 1
        assert ds.ImageLaterality == "L" and ds.ViewCodeSequence[0].CodeValue == "399162004"
        back, _ = read_image(path)  # through its full-range VOI window
        np.testing.assert_allclose(back, image, atol=0.5 / (2**bits - 1) + 1e-6)


def test_derived_image_keeps_study_and_patient_with_a_new_series(tmp_path, image):
    source = parse_dataset(get_testdata_file("RG3_UNCR.dcm"))
    path = write_derived_dicom(
        tmp_path / "d.dcm", image, source, description="anomaly map", model_name="mambo", model_version="1"
    )
    ds = parse_dataset(path)
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.ImageType[0] == "DERIVED" and "anomaly map" in ds.DerivationDescription
    ref = ds.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == source.SOPClassUID
    assert ds.ImageLaterality == "R" and "PixelSpacing" not in ds


def test_dualview_pair_is_one_study_and_one_series(tmp_path, image):
    cc, mlo = write_dualview_pair(tmp_path, image, image.T.copy(), laterality="L", model_name="dv", model_version="1")
    a, b = parse_dataset(cc), parse_dataset(mlo)
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID and (a.InstanceNumber, b.InstanceNumber) == (1, 2)
    assert (a.ViewPosition, b.ViewPosition) == ("CC", "MLO") and a.PatientID == b.PatientID
    assert b.Rows == 30 and b.Columns == 40


def test_writers_refuse_non_images_and_leave_no_file(tmp_path):
    bad = np.full((8, 8), np.nan)
    with pytest.raises(BadInputError):
        write_synthetic_dicom(tmp_path / "x.dcm", bad, model_name="m", model_version="1")
    with pytest.raises(BadInputError):
        write_synthetic_dicom(tmp_path / "x.dcm", np.zeros((2, 3, 4)), model_name="m", model_version="1")
    with pytest.raises(BadInputError):
        write_synthetic_dicom(tmp_path / "x.dcm", np.zeros((8, 8)), model_name="m", model_version="1", view="ML")
    assert list(tmp_path.iterdir()) == []


def test_synthetic_mammogram_is_digital_mammography_marked_synthetic(tmp_path, image):
    path = write_synthetic_mg(
        tmp_path / "mg.dcm",
        image,
        model_name="mambo-demo",
        model_version="2.3",
        laterality="R",
        view="CC",
        pixel_spacing_mm=0.07,
        seed=5,
    )
    ds = parse_dataset(path)
    assert ds.SOPClassUID == DIGITAL_MAMMOGRAPHY_PRESENTATION and ds.Modality == "MG"
    assert ds.SyntheticData == "YES" and ds.ImageType[0] == "DERIVED"
    assert SYNTHETIC_WARNING in ds.SeriesDescription and SYNTHETIC_WARNING in ds.ImageComments
    assert ds.PatientIdentityRemoved == "YES" and ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.ContributingEquipmentSequence[0].ManufacturerModelName == "mambo-demo"
    assert (ds.ImageLaterality, ds.ViewPosition) == ("R", "CC")
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.07, 0.07] == [float(v) for v in ds.PixelSpacing]
    assert ds.BitsStored == 16 and ds.PresentationLUTShape == "IDENTITY" and "WindowCenter" in ds
    assert "nominal" not in ds.ImageComments and "seed 5" in ds.ImageComments
    np.testing.assert_array_equal(ds.pixel_array, to_uint16(image))
    back, info = read_image(path)
    np.testing.assert_allclose(back, image, atol=1.0 / 65535 + 1e-6)
    assert (info.laterality, info.view) == ("R", "CC")


def test_mammogram_without_a_bundle_spacing_says_its_spacing_is_nominal(tmp_path, image):
    path = write_synthetic_mg(tmp_path / "mg.dcm", image, model_name="m", model_version="1", laterality="L", view="MLO")
    ds = parse_dataset(path)
    assert float(ds.ImagerPixelSpacing[0]) == NOMINAL_PIXEL_SPACING_MM and "nominal pixel spacing" in ds.ImageComments


def test_every_model_output_carries_synthetic_data_yes(tmp_path, image):
    for kind, path in _all_kinds(tmp_path, image).items():
        ds = parse_dataset(path)
        assert (ds.get("SyntheticData") == "YES") == (kind != "phantom"), kind


def test_dualview_mammography_pair_is_one_study_cc_and_mlo(tmp_path, image):
    cc, mlo = write_dualview_pair(
        tmp_path, image, image.T.copy(), laterality="R", model_name="dv", model_version="1", iod="mg"
    )
    a, b = parse_dataset(cc), parse_dataset(mlo)
    assert a.SOPClassUID == b.SOPClassUID == DIGITAL_MAMMOGRAPHY_PRESENTATION
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert (a.ViewPosition, b.ViewPosition) == ("CC", "MLO") and a.PatientID == b.PatientID


def test_derived_mammogram_joins_the_source_study_and_refuses_an_unknown_view(tmp_path, image):
    phantom = write_mg_phantom_dicom(
        tmp_path / "ph.dcm",
        image,
        laterality="L",
        view="MLO",
        patient_id="PH9",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
    )
    source = parse_dataset(phantom)
    path = write_derived_mg(
        tmp_path / "d.dcm", image, source, description="super-resolution x2", model_name="m", model_version="1"
    )
    ds = parse_dataset(path)
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == "PH9"
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SyntheticData == "YES"
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (ds.ImageLaterality, ds.ViewPosition) == ("L", "MLO")
    cr = parse_dataset(get_testdata_file("RG3_UNCR.dcm"))  # a CR without a CC/MLO view
    with pytest.raises(BadInputError, match="dicom-mg"):
        write_derived_mg(tmp_path / "x.dcm", image, cr, description="sr", model_name="m", model_version="1")


def test_rescaled_heat_map_reads_back_its_real_values(tmp_path, image):
    path = write_derived_dicom(
        tmp_path / "h.dcm",
        image,
        parse_dataset(get_testdata_file("RG3_UNCR.dcm")),
        description="anomaly heat map",
        model_name="m",
        model_version="1",
        value_range=(0.0, 0.25),
    )
    from pydicom.pixels import apply_modality_lut

    ds = parse_dataset(path)
    np.testing.assert_allclose(apply_modality_lut(ds.pixel_array, ds), image * 0.25, atol=0.25 / 65535 + 1e-7)
