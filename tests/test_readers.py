"""read_image / probe_image: formats sniffed by content, hostile input refused with typed errors."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from models.errors import BadInputError, PayloadTooLargeError, UnsupportedMediaError
from models.imaging.dicom import parse_dataset
from models.imaging.files import write_png16
from models.imaging.readers import probe_image, read_image, sniff_format


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _gradient(h: int = 48, w: int = 32) -> np.ndarray:
    return np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    png_named_dcm = tmp_path / "scan.dcm"
    write_png16(png_named_dcm, _gradient())
    image, info = read_image(png_named_dcm)
    assert info.format == "png" and info.bits == 16
    np.testing.assert_allclose(image, _gradient(), atol=1 / 65535)
    dicom_named_png = tmp_path / "scan.png"
    dicom_named_png.write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    assert read_image(dicom_named_png)[1].format == "dicom"


def test_8bit_png_and_16bit_tiff_are_scaled_by_their_bit_depth(tmp_path):
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image, info = read_image(_png_bytes(u8))
    assert info.bits == 8
    np.testing.assert_allclose(image, u8 / 255.0, atol=1e-6)
    u16 = (np.arange(64 * 40, dtype=np.uint32) * 25 % 65536).astype(np.uint16).reshape(64, 40)
    buf = io.BytesIO()
    Image.fromarray(u16).save(buf, format="TIFF")
    image, info = read_image(buf.getvalue())
    assert (info.format, info.bits, info.height, info.width) == ("tiff", 16, 64, 40)
    np.testing.assert_allclose(image, u16 / 65535.0, atol=1e-6)


def test_rgb_png_is_read_as_gray():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    image, info = read_image(_png_bytes(rgb))
    assert image.shape == (8, 8) and info.photometric == "RGB"
    np.testing.assert_allclose(image, 1 / 3, atol=1e-6)


def test_palette_alpha_and_1bit_pngs_read_as_their_visible_gray():
    gray = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    expected = gray / 255.0
    palette = Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    alpha = Image.fromarray(np.stack([gray, np.full_like(gray, 255)], axis=-1), mode="LA")
    for im in (palette, alpha):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        image, _ = read_image(buf.getvalue())
        np.testing.assert_allclose(image, expected, atol=3 / 255)
    bits = Image.fromarray(gray > 127).convert("1")
    buf = io.BytesIO()
    bits.save(buf, format="PNG")
    np.testing.assert_array_equal(read_image(buf.getvalue())[0], (gray > 127).astype(np.float32))


def test_empty_text_and_other_formats_are_refused_with_a_reason():
    with pytest.raises(BadInputError, match="empty"):
        read_image(b"")
    with pytest.raises(UnsupportedMediaError, match="unrecognised"):
        read_image(b"patient,age\n1,50\n" * 20)
    with pytest.raises(UnsupportedMediaError, match="JPEG"):
        sniff_format(b"\xff\xd8\xff\xe0" + b"\0" * 200)


def test_truncated_png_and_dicom_are_bad_input():
    png = _png_bytes((np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16))
    with pytest.raises(BadInputError):
        read_image(png[: len(png) // 2])
    with pytest.raises(BadInputError):
        probe_image(png[: len(png) // 2])
    dcm = Path(get_testdata_file("RG3_UNCR.dcm")).read_bytes()
    with pytest.raises(BadInputError, match="truncated"):
        probe_image(dcm[: len(dcm) // 2])
    with pytest.raises(BadInputError):
        read_image(dcm[:300])  # header cut mid-element


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a size but whose data is one tiny chunk: nothing should decode it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    out = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\0" * 16)
    return out + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))


def test_oversized_images_are_refused_before_decoding():
    huge = _png_header_only(60000, 60000)
    with pytest.raises(PayloadTooLargeError):
        probe_image(huge)
    with pytest.raises(PayloadTooLargeError):
        read_image(huge)
    with pytest.raises(PayloadTooLargeError, match="longest side"):
        read_image(_png_bytes(np.zeros((20, 300), np.uint8)), max_side=256)
    ds_bytes = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()
    with pytest.raises(PayloadTooLargeError):
        probe_image(ds_bytes, max_pixels=1000 * 1000)


def test_hostile_dicom_headers_are_bad_input(tmp_path):
    ds = parse_dataset(get_testdata_file("MR_small.dcm"))
    ds.Rows = 0
    path = tmp_path / "zero.dcm"
    ds.save_as(path)
    with pytest.raises(BadInputError, match="dimensions"):
        probe_image(path.read_bytes())
    ds = parse_dataset(get_testdata_file("MR_small.dcm"))
    ds.NumberOfFrames = 4
    ds.save_as(path)
    with pytest.raises(BadInputError):
        read_image(path)


def test_probe_of_a_truncated_file_on_disk_reads_its_length_from_the_header(tmp_path):
    data = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-5000])  # pixel data left unread by the probe, its declared length is not
    with pytest.raises(BadInputError, match="truncated"):
        probe_image(path)
    path.write_bytes(data)
    assert probe_image(path).height == 1955


def test_probe_matches_read_for_dicom_without_decoding():
    data = Path(get_testdata_file("RG1_J2KR.dcm")).read_bytes()
    info = probe_image(data)
    assert (info.height, info.width, info.bits, info.photometric) == (1955, 1841, 15, "MONOCHROME1")
    assert info.transfer_syntax == "1.2.840.10008.1.2.4.90" and info.study_uid
    assert "PixelData" not in info.dataset  # the kept header is small


def test_non_image_dicom_is_unsupported(tmp_path):
    ds = parse_dataset(get_testdata_file("MR_small.dcm"))
    del ds.PixelData
    path = tmp_path / "noimage.dcm"
    ds.save_as(path)
    with pytest.raises(UnsupportedMediaError, match="no pixel data"):
        read_image(path)


@pytest.mark.filterwarnings("ignore")
def test_mutated_files_fail_only_with_typed_errors():
    """Random byte damage anywhere (header, pixel data, truncation) never escapes as a raw exception."""
    sources = [
        Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes(),
        Path(get_testdata_file("MR_small.dcm")).read_bytes(),
        Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes(),
        _png_bytes((np.random.default_rng(1).random((24, 24)) * 65535).astype(np.uint16)),
    ]
    rng = np.random.default_rng(2024)
    for data in sources:
        _damaged_files_are_refused_or_whole(data, rng, trials=40, max_flips=12, header_bytes=700)


def _damaged_files_are_refused_or_whole(
    data: bytes, rng: np.random.Generator, *, trials: int, max_flips: int, header_bytes: int | None = None
) -> None:
    """Damage ``data`` ``trials`` times (every other one truncated; random bytes flipped, every fourth time
    in the first ``header_bytes``): nothing escapes but a typed error, no truncated file decodes, and
    what still decodes is a whole, sane image of the original's shape."""
    from models.errors import MammogenError

    shape = read_image(data)[0].shape
    refused = 0
    for trial in range(trials):
        damaged = bytearray(data)
        truncated = bool(trial % 2)
        if truncated:
            damaged = damaged[: int(rng.integers(1, len(damaged)))]
        span = header_bytes if header_bytes and trial % 4 == 0 else len(damaged)
        for _ in range(int(rng.integers(1, max_flips))):
            damaged[int(rng.integers(0, min(len(damaged), span)))] = int(rng.integers(0, 256))
        with contextlib.suppress(MammogenError):  # the header alone may still look fine
            probe_image(bytes(damaged))
        try:
            image, _ = read_image(bytes(damaged))
        except MammogenError:
            refused += 1
            continue
        assert not truncated, f"a truncated file ({len(damaged)} of {len(data)} bytes) decoded"
        assert image.shape == shape and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    assert refused >= trials // 2  # every truncation, and more


# TIFF layouts: everything tifffile decodes is read correctly, the rest is refused naming the layout ----------
def _tiff(array: np.ndarray, **kwargs) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


def test_16bit_rgba_tiff_reads_its_16bit_values():
    rgba = np.random.default_rng(0).integers(0, 65536, (24, 20, 4)).astype(np.uint16)
    image, info = read_image(_tiff(rgba, photometric="rgb", extrasamples=["unassalpha"]))
    assert (info.format, info.bits, info.photometric) == ("tiff", 16, "RGB")
    np.testing.assert_allclose(image, rgba[..., :3].mean(axis=-1) / 65535.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_tiffs_read_in_unit_range_or_min_max_scaled(dtype):
    unit = _gradient().astype(dtype)
    image, info = read_image(_tiff(unit))
    assert info.bits == np.dtype(dtype).itemsize * 8
    np.testing.assert_allclose(image, unit, atol=1e-6)
    raw = (unit * 3000 - 1000).astype(dtype)  # e.g. attenuation values
    np.testing.assert_allclose(read_image(_tiff(raw))[0], unit, atol=1e-5)


def test_non_finite_float_tiff_is_bad_input_naming_the_values():
    data = _gradient().astype(np.float32)
    data[3, 4], data[5, 6] = np.nan, np.inf
    with pytest.raises(BadInputError, match="NaN or infinite"):
        read_image(_tiff(data))


@pytest.mark.parametrize("compression", ["lzw", "deflate", "packbits", "zstd", "jpeg"])
def test_compressed_tiffs_are_read(compression):
    u8 = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48)
    image, info = read_image(_tiff(u8, compression=compression))
    atol = 0.1 if compression == "jpeg" else 1e-6
    assert info.bits == 8
    np.testing.assert_allclose(image, u8 / 255.0, atol=atol)


def test_min_is_white_planar_and_palette_tiffs_read_as_their_visible_gray():
    u16 = (np.arange(32 * 32) * 61 % 65536).astype(np.uint16).reshape(32, 32)
    np.testing.assert_allclose(read_image(_tiff(u16, photometric="miniswhite"))[0], 1 - u16 / 65535.0, atol=1e-6)
    rgb = np.random.default_rng(1).integers(0, 256, (3, 16, 16)).astype(np.uint8)
    planar = read_image(_tiff(rgb, photometric="rgb", planarconfig="separate"))[0]
    np.testing.assert_allclose(planar, rgb.mean(axis=0) / 255.0, atol=1e-6)
    index = (np.arange(16 * 16) % 4).astype(np.uint8).reshape(16, 16)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, :4] = np.array([0, 21845, 43690, 65535], np.uint16)  # a gray ramp over 4 entries
    image = read_image(_tiff(index, photometric="palette", colormap=colormap))[0]
    np.testing.assert_allclose(image, index / 3.0, atol=1e-6)


def test_unsupported_tiff_layouts_are_415_naming_the_layout():
    cmyk = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(UnsupportedMediaError, match="SEPARATED"):
        read_image(_tiff(cmyk, photometric="separated"))
    with pytest.raises(UnsupportedMediaError, match="complex"):
        read_image(_tiff(np.zeros((8, 8), np.complex64)))


def test_unreadable_raster_errors_name_no_object_addresses():
    for data in (b"II*\x00" + b"\x07" * 400, b"\x89PNG\r\n\x1a\n" + b"\x07" * 400):
        with pytest.raises(BadInputError) as err:
            read_image(data)
        assert "0x" not in str(err.value) and "BytesIO" not in str(err.value)


def test_png_bomb_header_is_refused_with_our_limit_before_pillow_sees_it():
    with pytest.raises(PayloadTooLargeError, match="at most 1000000") as err:
        probe_image(_png_header_only(30000, 30000), max_pixels=1000 * 1000, max_side=None)
    assert "178956970" not in str(err.value)


def test_highly_compressed_images_are_refused_as_decompression_bombs_before_decoding():
    bomb = _png_bytes(np.zeros((2000, 2000), np.uint8))  # a few KB that decode to 4 Mpx
    with pytest.raises(PayloadTooLargeError, match="decompression bomb"):
        probe_image(bomb, max_pixels_per_byte=200)
    assert probe_image(bomb).height == 2000  # the bound is opt-in: the service sets it
    noisy = _png_bytes(np.random.default_rng(0).integers(0, 256, (1200, 1000)).astype(np.uint8))
    assert probe_image(noisy, max_pixels_per_byte=200).width == 1000  # a real image is nowhere near


def test_mutated_tiffs_fail_only_with_typed_errors():
    data = _tiff((np.random.default_rng(3).random((24, 24)) * 65535).astype(np.uint16), compression="deflate")
    _damaged_files_are_refused_or_whole(data, np.random.default_rng(7), trials=60, max_flips=8)
