"""DICOM decoding on real radiographs from pydicom-data: MONOCHROME1, VOI LUT, compressed syntaxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from models.errors import BadInputError, UnsupportedMediaError
from models.imaging.dicom import check_pixel_header, dataset_to_image, laterality_of, parse_dataset, view_of
from models.imaging.readers import read_image
from tests.imaging_support import phantom_dicom


def _file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not shipped by the installed pydicom-data")
    return str(path)


@pytest.fixture(scope="module")
def rg1() -> tuple[np.ndarray, object]:
    return read_image(_file("RG1_UNCR.dcm"))


def test_monochrome1_is_inverted_so_dense_tissue_is_bright(rg1):
    image, info = rg1
    assert info.photometric == "MONOCHROME1"
    raw = parse_dataset(_file("RG1_UNCR.dcm")).pixel_array.astype(np.float64)
    # In MONOCHROME1 a high stored value is dark: after decoding, brightness must fall as raw rises.
    corr = np.corrcoef(raw[::8, ::8].ravel(), image[::8, ::8].ravel())[0, 1]
    assert corr < -0.95
    # The chest radiograph's air-filled background (collimated corners aside) ends up dark, bone bright.
    assert image.dtype == np.float32 and image.shape == (1955, 1841)
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_presentation_lut_inverse_flips_monochrome2_but_not_monochrome1_twice():
    ds = parse_dataset(_file("RG3_UNCR.dcm"))
    ds.PresentationLUTShape = "INVERSE"
    mono1_inverse = dataset_to_image(ds)
    ds.PresentationLUTShape = "IDENTITY"
    mono1 = dataset_to_image(ds)
    np.testing.assert_array_equal(mono1_inverse, mono1)  # a restatement, not a second flip
    ds.PhotometricInterpretation = "MONOCHROME2"
    mono2 = dataset_to_image(ds)
    ds.PresentationLUTShape = "INVERSE"
    np.testing.assert_allclose(dataset_to_image(ds), 1.0 - mono2, atol=1e-6)


def test_window_on_rescaled_signed_ct_maps_centre_to_mid_grey():
    ds = parse_dataset(_file("CT_small.dcm"))  # signed, RescaleSlope/Intercept present
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    centre = float(np.median(hu))
    ds.WindowCenter, ds.WindowWidth = centre, 400.0
    image = dataset_to_image(ds)
    expected = np.clip((hu - (centre - 0.5)) / 399.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(image, expected, atol=1e-4)


def test_pixel_padding_becomes_background():
    ds = parse_dataset(_file("RG3_UNCR.dcm"))
    raw = ds.pixel_array
    before = dataset_to_image(ds)
    ds.PixelPaddingValue = int(raw[0, 0])
    after = dataset_to_image(ds)
    padded = raw == raw[0, 0]
    assert padded.any() and (after[padded] == 0).all()
    np.testing.assert_array_equal(after[~padded], before[~padded])


def test_voi_window_from_the_file_is_applied_linearly(rg1):
    image, _ = rg1
    ds = parse_dataset(_file("RG1_UNCR.dcm"))
    raw = ds.pixel_array.astype(np.float64)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    bits = int(ds.BitsStored)
    expected = np.clip(((raw - (c - 0.5)) / (w - 1) + 0.5), 0, 1) * (2**bits - 1) / (2**bits - 1)
    np.testing.assert_allclose(image, 1.0 - expected, atol=2e-4)


def test_narrow_window_clips_and_sigmoid_window_is_centred():
    ds = parse_dataset(_file("RG3_UNCR.dcm"))
    raw = ds.pixel_array.astype(np.float64)
    centre = float(np.median(raw))
    ds.WindowCenter, ds.WindowWidth = centre, 50.0
    ds.PhotometricInterpretation = "MONOCHROME2"
    narrow = dataset_to_image(ds)
    assert (narrow[raw > centre + 30] == 1.0).all()
    assert (narrow[raw < centre - 30] == 0.0).all()
    ds.VOILUTFunction = "SIGMOID"
    sig = dataset_to_image(ds)
    at_centre = sig[raw == np.round(centre)]
    assert at_centre.size and abs(float(at_centre.mean()) - 0.5) < 0.05
    above = sig[raw == np.round(centre) + 20]  # PS3.3 C.11.2.1.3.1: 1 / (1 + exp(-4 (x - c) / w))
    assert above.size and abs(float(above.mean()) - 1 / (1 + np.exp(-4 * (np.round(centre) + 20 - centre) / 50))) < 0.01
    no_voi = dataset_to_image(ds, apply_voi=False)
    np.testing.assert_allclose(no_voi, raw / (2 ** int(ds.BitsStored) - 1), atol=1e-6)


@pytest.mark.parametrize(("compressed", "plain"), [("RG1_J2KR.dcm", "RG1_UNCR.dcm"), ("RG3_J2KR.dcm", "RG3_UNCR.dcm")])
def test_lossless_jpeg2000_decodes_identical_to_uncompressed(compressed, plain):
    a, info_a = read_image(_file(compressed))
    b, _ = read_image(_file(plain))
    assert info_a.transfer_syntax == "1.2.840.10008.1.2.4.90"
    np.testing.assert_array_equal(a, b)


def test_lossy_jpeg2000_is_close_to_uncompressed():
    a, info = read_image(_file("RG1_J2KI.dcm"))
    b, _ = read_image(_file("RG1_UNCR.dcm"))
    assert info.transfer_syntax == "1.2.840.10008.1.2.4.91"
    diff = np.abs(a - b)
    assert diff.mean() < 0.005 and not np.array_equal(a, b)


def test_rle_lossless_decodes_identical_to_uncompressed():
    a, info = read_image(_file("MR_small_RLE.dcm"))
    b, _ = read_image(_file("MR_small.dcm"))
    assert info.transfer_syntax == "1.2.840.10008.1.2.5"
    np.testing.assert_array_equal(a, b)


def test_laterality_and_view_are_parsed_from_tags():
    ds = parse_dataset(_file("RG3_UNCR.dcm"))
    assert laterality_of(ds) == "R"
    ds.ImageLaterality = "L"
    assert laterality_of(ds) == "L"
    ds.ViewPosition = "MLO"
    assert view_of(ds) == "MLO"
    ds.ViewPosition = "AP"
    assert view_of(ds) == "other"
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    legacy = Dataset()
    legacy.CodeValue, legacy.CodingSchemeDesignator = "R-10242", "SRT"
    ds.ViewCodeSequence = Sequence([legacy])
    assert view_of(ds) == "CC"  # a code wins over ViewPosition; legacy SNOMED RT accepted


def test_syntax_without_a_decoder_is_refused_with_its_name():
    ds = parse_dataset(_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: nobody decodes it here
    with pytest.raises(UnsupportedMediaError, match=r"1\.2\.840\.10008\.1\.2\.4\.100"):
        check_pixel_header(ds)


def test_jpeg_ls_lossless_file_decodes_identical_to_uncompressed():
    a, info = read_image(_file("MR_small_jpeg_ls_lossless.dcm"))
    b, _ = read_image(_file("MR_small.dcm"))
    assert info.transfer_syntax == "1.2.840.10008.1.2.4.80"
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "syntax",
    ["JPEGLosslessProcess14_1", "JPEGLosslessProcess14", "JPEGLSLossless", "JPEG2000Lossless", "RLELossless"],
)
def test_14bit_mammogram_in_every_lossless_syntax_decodes_identically(tmp_path, syntax):
    """The syntaxes real MG archives use (RSNA: JPEG Lossless SV1 and JPEG 2000), transcoded by GDCM."""
    gdcm = pytest.importorskip("gdcm")
    from training.phantoms import make_phantom_case

    image = make_phantom_case(1, (96, 80), laterality="L").cc.image
    src = phantom_dicom(tmp_path / "plain.dcm", image, laterality="L", view="CC", bits_stored=14)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(tmp_path / "compressed.dcm"))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    plain, _ = read_image(src)
    packed, info = read_image(tmp_path / "compressed.dcm")
    assert info.transfer_syntax != "1.2.840.10008.1.2.1" and (info.laterality, info.view) == ("L", "CC")
    np.testing.assert_array_equal(packed, plain)


def test_truncated_native_pixel_data_is_a_bad_input():
    data = Path(_file("MR_small.dcm")).read_bytes()
    with pytest.raises(BadInputError):
        read_image(data[: len(data) - 1000])
