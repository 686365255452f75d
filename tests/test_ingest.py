"""Ingestion: good files indexed with their keys, bad ones listed with the reason, the run never aborts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file

from app.cli.main import main
from models.imaging.dicom_write import generate_uid
from models.imaging.files import write_png8, write_png16
from tests.imaging_support import phantom_dicom
from training.ingest import read_index
from training.phantoms import make_phantom_case


def _messy_folder(root: Path) -> dict[str, Path]:
    case = make_phantom_case(30, (80, 64), laterality="R")
    study, series = generate_uid(), generate_uid()
    files = {}
    for n, view in enumerate(case.views, start=1):
        files[view.view] = phantom_dicom(  # PACS-style name: no extension
            root / "patient1" / f"IMG{n:04d}",
            view.image,
            "R",
            view.view,
            patient_id="PH30",
            study_uid=study,
            series_uid=series,
            instance_number=n,
            bits_stored=12,
        )
    (root / "other").mkdir(parents=True)
    files["cr"] = Path(shutil.copy(get_testdata_file("RG1_J2KR.dcm"), root / "other" / "chest.dcm"))
    files["png16"] = write_png16(root / "pngs" / "a.png", case.cc.image)
    files["png8"] = write_png8(root / "pngs" / "b.png", case.mlo.image)
    good = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    files["truncated"] = root / "bad" / "cut.dcm"
    files["truncated"].parent.mkdir(parents=True)
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["text"] = root / "bad" / "notes.txt"
    files["text"].write_text("reader notes: BI-RADS 2\n" * 10)
    files["empty"] = root / "bad" / "empty.png"
    files["empty"].write_bytes(b"")
    (root / ".hidden").write_text("ignored")
    return files


def test_ingest_indexes_good_files_and_lists_bad_ones_with_reasons(tmp_path, capsys):
    root = tmp_path / "data"
    files = _messy_folder(root)
    out = tmp_path / "index.csv"
    assert main(["ingest", str(root), "--out", str(out)]) == 0
    rows = {Path(r["path"]).resolve(): r for r in read_index(out)}
    errors = {Path(r["path"]).resolve(): r for r in read_index(tmp_path / "index.errors.csv")}
    good = ("CC", "MLO", "cr", "png16", "png8")
    assert set(rows) == {files[k].resolve() for k in good}
    assert set(errors) == {files[k].resolve() for k in ("truncated", "text", "empty")}
    cc, mlo = rows[files["CC"].resolve()], rows[files["MLO"].resolve()]
    assert (cc["format"], cc["view"], cc["laterality"], cc["bits"]) == ("dicom", "CC", "R", "12")
    assert mlo["view"] == "MLO" and cc["patient_id"] == mlo["patient_id"] == "PH30"
    assert cc["study_uid"] == mlo["study_uid"] and cc["sop_uid"] != mlo["sop_uid"]
    assert (cc["height"], cc["width"]) == ("80", "64")
    cr = rows[files["cr"].resolve()]
    assert (cr["photometric"], cr["bits"], cr["transfer_syntax"]) == ("MONOCHROME1", "15", "1.2.840.10008.1.2.4.90")
    assert rows[files["png8"].resolve()]["bits"] == "8" and rows[files["png16"].resolve()]["bits"] == "16"
    assert "truncated" in errors[files["truncated"].resolve()]["reason"]
    assert errors[files["text"].resolve()]["error"] == "unsupported_media"
    assert "empty" in errors[files["empty"].resolve()]["reason"]
    printed = capsys.readouterr().out
    assert "indexed 5 images" in printed and "skipped 3" in printed


def test_ingest_of_a_missing_folder_is_a_bad_input(tmp_path):
    assert main(["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "i.csv")]) == 3


def test_decode_mode_also_catches_broken_pixel_data(tmp_path):
    from training.ingest import index_folder

    root = tmp_path / "d"
    root.mkdir()
    path = write_png16(root / "ok.png", np.zeros((40, 40), np.float32))
    data = path.read_bytes()
    # Keep the header and the first chunk bytes but corrupt the compressed stream.
    (root / "corrupt.png").write_bytes(data[:60] + bytes(len(data) - 60))
    report = index_folder(root, tmp_path / "i.csv", decode=True)
    assert report.indexed == 1 and report.failed == 1


def test_parallel_ingest_writes_the_same_index_in_the_same_order(tmp_path):
    from training.ingest import index_folder

    root = tmp_path / "data"
    _messy_folder(root)
    serial = index_folder(root, tmp_path / "serial.csv")
    parallel = index_folder(root, tmp_path / "parallel.csv", workers=2)
    assert (serial.indexed, serial.failed) == (parallel.indexed, parallel.failed) == (5, 3)
    assert read_index(tmp_path / "serial.csv") == read_index(tmp_path / "parallel.csv")
    assert read_index(serial.errors_path) == read_index(parallel.errors_path)


def test_exclude_globs_skip_names_and_relative_paths(tmp_path):
    root = tmp_path / "data"
    _messy_folder(root)
    out = tmp_path / "i.csv"
    assert main(["ingest", str(root), "--out", str(out), "--exclude", "bad/*", "--exclude", "*.png"]) == 0
    names = sorted(Path(r["path"]).name for r in read_index(out))
    assert names == ["IMG0001", "IMG0002", "chest.dcm"]
    assert read_index(tmp_path / "i.errors.csv") == []


def test_label_masks_are_linked_to_their_images_and_never_indexed_as_images(tmp_path, capsys):
    root = tmp_path / "held-out"
    case = make_phantom_case(33, (80, 64), laterality="L", lesions=True)
    images = {}
    for view in case.views:
        images[view.view] = write_png16(root / f"{view.view.lower()}.png", view.image)
        write_png8(root / f"{view.view.lower()}_mask.png", view.lesion_mask.astype(np.float32))
    orphan = write_png8(root / "lost_mask.png", case.cc.lesion_mask.astype(np.float32))
    out = tmp_path / "index.csv"
    assert main(["ingest", str(root), "--out", str(out)]) == 0
    rows = read_index(out)
    assert sorted(Path(r["path"]).name for r in rows) == ["cc.png", "mlo.png"]  # 2 images, not 5
    for r in rows:
        assert Path(r["label_mask"]) == Path(r["path"]).with_name(Path(r["path"]).stem + "_mask.png")
    errors = read_index(tmp_path / "index.errors.csv")
    assert [(Path(e["path"]), e["error"]) for e in errors] == [(orphan, "orphan_label_mask")]
    assert "linked 2 label masks" in capsys.readouterr().out
