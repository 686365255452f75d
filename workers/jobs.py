"""The job functions RQ runs: plain importable functions taking one typed job request as JSON.

Each one rebuilds its request (`workers.job_requests`), gets the process's loaded pipelines from
`workers.runtime.current()`, runs the SAME pipeline entry point the CLI runs (the service and the
CLI make the same image for the same request), passes progress and the cancel flag down as
callbacks (`workers.progress.JobProgress`), writes its images to the result store atomically and
returns only a manifest (file names, sizes, sha256, summary).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rq import get_current_job

from models.progress import Reporter
from workers.job_requests import AnomalyMapJob, GenerateJob, InsertLesionJob, SuperResolveJob, UploadJob
from workers.progress import JobProgress
from workers.runtime import WorkerRuntime, current
from workers.store import ResultFile, ResultStore


def _start() -> tuple[Any, WorkerRuntime, JobProgress]:
    job = get_current_job()
    if job is None:
        raise RuntimeError("job functions run inside an RQ worker")
    rt = current()
    progress = JobProgress(job, job.connection)
    progress.set(progress={"stage": "starting", "step": 0, "total": 0, "fraction": 0.0, "eta_s": None})
    Reporter(cancel=progress.cancelled).check_cancel()  # cancelled while still queued: stop before loading
    return job, rt, progress


def _write_image(
    store: ResultStore,
    job_id: str,
    stem: str,
    image: np.ndarray,
    formats: tuple[str, ...],
    dicom: Callable[[Any], object] | None,
    mg: Callable[[Any], object] | None = None,
) -> list[ResultFile]:
    """One image in every requested format (float [0, 1] H x W): ``dicom`` writes the Secondary
    Capture (``<stem>.dcm``), ``mg`` the Digital Mammography object (``<stem>_mg.dcm``)."""
    files = []
    if "png16" in formats:
        files.append(store.write_png16(job_id, f"{stem}.png", image))
    if "npy" in formats:
        files.append(store.write_npy(job_id, f"{stem}.npy", image.astype(np.float32)))
    if "dicom" in formats and dicom is not None:
        files.append(store.write_with(job_id, f"{stem}.dcm", dicom))
    if "dicom-mg" in formats and mg is not None:
        files.append(store.write_with(job_id, f"{stem}_mg.dcm", mg))
    return files


def _finish(
    rq_job: Any, rt: WorkerRuntime, job: Any, files: list[ResultFile], summary: dict[str, Any], t0: float
) -> dict[str, Any]:
    """The manifest, with the acceleration the networks ran in; first the DICOM results are handed to
    the PACS outbox (sent by the worker's delivery thread, so a slow or absent PACS never holds this
    job or fails it)."""
    summary = {**summary, "acceleration": rt.acceleration_info()}
    if job.deliver:
        from workers.delivery import schedule_results

        record = schedule_results(
            rq_job.connection,
            rq_job.origin,
            rq_job.id,
            rt.store,
            files,
            list(job.deliver),
            ttl_s=int(rq_job.result_ttl or 7 * 24 * 3600),
            policy=rt.delivery,
        )
        summary = {**summary, "delivery": {"destinations": list(job.deliver), "instances": len(record["instances"])}}
    return _manifest(files, summary, t0)


def _manifest(files: list[ResultFile], summary: dict[str, Any], t0: float) -> dict[str, Any]:
    summary = {**summary, "timings": {**summary.get("timings", {}), "job_s": round(time.perf_counter() - t0, 3)}}
    return {"files": [f.to_dict() for f in files], "summary": summary}


def _jsonable(stats: Any) -> dict[str, Any]:
    import dataclasses
    import json

    if hasattr(stats, "to_dict"):
        stats = stats.to_dict()
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        stats = dataclasses.asdict(stats)
    if not isinstance(stats, dict):
        stats = dict(getattr(stats, "__dict__", {}))
    return json.loads(json.dumps(stats, default=str))


# -- generation ---------------------------------------------------------------------------------
def generate(job: dict[str, Any]) -> dict[str, Any]:
    """MAMBO full-resolution images (all seeds in lock-step) or dual-view CC + MLO pairs."""
    t0 = time.perf_counter()
    request = GenerateJob.from_dict(job)
    if request.request.model == "dualview":
        return _generate_dualview(request, t0)
    return _generate_mambo(request, t0)


def _generate_dualview(job: GenerateJob, t0: float) -> dict[str, Any]:
    from models.imaging.dicom_write import write_dualview_pair

    rq_job, rt, progress = _start()
    pipe = rt.dualview()
    request = job.request
    lat = request.laterality
    result = pipe.run(request, callback=progress, cancel=progress.cancelled)
    spacing = rt.bundle("dualview").pixel_spacing_mm
    files: list[ResultFile] = []
    for i, (cc, mlo) in enumerate(zip(result.cc, result.mlo, strict=True)):
        stem = f"pair{i:02d}"
        files += _write_image(rt.store, rq_job.id, f"{stem}_cc", cc, job.formats, None)
        files += _write_image(rt.store, rq_job.id, f"{stem}_mlo", mlo, job.formats, None)
        # CC and MLO of one breast: one study, one series per IOD (each file written atomically)
        for iod, fmt, suffix in (("sc", "dicom", ""), ("mg", "dicom-mg", "_mg")):
            if fmt not in job.formats:
                continue
            paths = write_dualview_pair(
                rt.store.job_dir(rq_job.id),
                cc,
                mlo,
                laterality=lat,
                model_name=pipe.name,
                model_version=pipe.version,
                seed=result.seeds[i],
                chest_wall=request.chest_wall,
                names=(f"{stem}_cc{suffix}.dcm", f"{stem}_mlo{suffix}.dcm"),
                iod=iod,  # type: ignore[arg-type]
                pixel_spacing_mm=spacing,
            )
            files += [rt.store.record(p) for p in paths]
    summary = {
        "model": {"kind": "dualview", "name": pipe.name, "version": pipe.version},
        "seeds": result.seeds,
        "laterality": lat,
        "options": request.options.to_dict(),
        "stats": _jsonable(result.stats),
        "third_channel_error": [round(float(e), 5) for e in result.third_channel_error],
    }
    return _finish(rq_job, rt, job, files, summary, t0)


def _generate_mambo(job: GenerateJob, t0: float) -> dict[str, Any]:
    from models.imaging.dicom_write import write_generated_mambo
    from models.lesion_insertion import insert_into_generated, insertion_share
    from models.progress import progress_share

    rq_job, rt, progress = _start()
    pipe = rt.mambo()
    spacing = rt.bundle("mambo").pixel_spacing_mm
    request = job.request
    started = time.monotonic()
    inserter = rt.lesion_inserter() if request.lesions else None  # no lesion network: fail before generating
    split = 1.0 - insertion_share(pipe, request)
    callback = progress_share(progress, 0.0, split, started) if inserter is not None else progress
    results = pipe.run(request, callback=callback, cancel=progress.cancelled)
    images = [np.asarray(r.image, dtype=np.float32) for r in results]
    insertions = (
        insert_into_generated(
            inserter, request, images, callback=progress, cancel=progress.cancelled, share=(split, 1.0), started=started
        )
        if inserter is not None
        else []
    )
    files: list[ResultFile] = []
    folder = rt.store.job_dir(rq_job.id)
    for i, seed in enumerate(request.options.seeds):
        stem = f"image{i:02d}"
        image = images[i] if not insertions else np.asarray(insertions[i].image, np.float32)
        files += _write_image(rt.store, rq_job.id, stem, image, job.formats, None)
        dicoms = write_generated_mambo(
            folder,
            stem,
            image,
            job.formats,
            model_name=pipe.name,
            model_version=pipe.version,
            laterality=request.laterality,
            view=job.view,  # MAMBO does not condition on the view: the request states what to record
            seed=seed,
            chest_wall=request.chest_wall,
            pixel_spacing_mm=spacing,
            description="MAMBO with inserted lesions" if insertions else "MAMBO",
        )
        files += [rt.store.record(p) for p in dicoms]
        if insertions:  # with DICOM output, the masks as a SEG referencing the image's DICOM (MG if written)
            image_dicom = dicoms[-1] if dicoms else None
            files += _write_generated_lesions(rt, rq_job.id, stem, images[i], insertions[i], pipe, seed, image_dicom)
    summary = {
        "model": {"kind": "mambo", "name": pipe.name, "version": pipe.version},
        "seeds": list(request.options.seeds),
        "laterality": request.laterality,
        "class": request.label,
        "options": request.options.to_dict(),
        "stats": _jsonable(results[0].stats),  # one lock-step run: the counts are for all images
    }
    if insertions:
        summary["lesions"] = [ins.records for ins in insertions]
        summary["lesion_stats"] = [_jsonable(ins.stats) for ins in insertions]
    return _finish(rq_job, rt, job, files, summary, t0)


def _write_generated_lesions(
    rt: WorkerRuntime,
    job_id: str,
    stem: str,
    healthy: np.ndarray,
    insertion: Any,
    pipe: Any,
    seed: int,
    image_dicom: Any = None,
) -> list[ResultFile]:
    """Beside a generated image with lesions: its healthy twin, the label masks, lesions.json and, when the
    image was written as DICOM, the masks as a SEG referencing it (``models.lesion_outputs.write_generated``,
    as `mammogen generate --lesion` writes them)."""
    from models.lesion_outputs import write_generated

    bundle = {"name": pipe.name, "version": pipe.version}
    folder = rt.store.job_dir(job_id)
    paths = write_generated(folder, stem, healthy, insertion, bundle=bundle, seed=seed, image_dicom=image_dicom)
    return [rt.store.record(p) for p in paths]


# -- uploads ------------------------------------------------------------------------------------
def _read_upload(rt: WorkerRuntime, job_id: str, job: UploadJob) -> tuple[np.ndarray, Any]:
    """The stored upload, decoded and put through the same checks the API ran before queueing it."""
    from models.imaging.readers import read_image
    from models.input_checks import check_input_image

    image, info = read_image(rt.store.upload_path(job_id, job.upload.name))
    mambo = rt.mambo()
    check_input_image(
        image,
        job.kind,  # type: ignore[arg-type]
        tile=mambo.geometry.s,
        info=info,
        preprocess=mambo.preprocess,
        scale=job.request.scale if isinstance(job, SuperResolveJob) else None,
        resolution=job.request.resolution if isinstance(job, AnomalyMapJob) else None,
    )
    return image, info


def _start_upload(job: UploadJob) -> tuple[UploadJob, Any, WorkerRuntime, JobProgress, np.ndarray, Any]:
    """An upload job's start: the typed request, the RQ job, the runtime, progress, the checked input."""
    rq_job, rt, progress = _start()
    image, info = _read_upload(rt, rq_job.id, job)
    return job, rq_job, rt, progress, image, info


def super_resolve(job: dict[str, Any]) -> dict[str, Any]:
    """A real low-resolution mammogram stands in for MAMBO's global (or mid) image; stages 2-3 add detail."""
    from models.imaging.dicom_write import write_derived_dicom, write_derived_mg

    t0 = time.perf_counter()
    request, rq_job, rt, progress, image, info = _start_upload(SuperResolveJob.from_dict(job))
    pipe = rt.super_resolution()
    config = request.request
    result = pipe(image, config, info=info, callback=progress, cancel=progress.cancelled)
    source = _source_dataset(info)
    spacing = info.pixel_spacing_mm[0] * image.shape[0] / result.image.shape[0] if info.pixel_spacing_mm else None
    derived = {
        "description": f"super-resolution x{config.scale}",
        "model_name": pipe.mambo.name,
        "model_version": pipe.mambo.version,
        "pixel_spacing_mm": spacing,
    }

    def dicom(path: Any) -> object:
        return write_derived_dicom(path, result.image, source, **derived)

    def mg(path: Any) -> object:
        return write_derived_mg(path, result.image, source, **derived)

    files = _write_image(rt.store, rq_job.id, "superres", result.image, request.formats, dicom, mg)
    rt.store.delete_upload(rq_job.id)
    summary = {
        "model": {"kind": "mambo", "name": pipe.mambo.name, "version": pipe.mambo.version},
        "input": {"format": info.format, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "options": config.options.to_dict(),
        "stats": _jsonable(result.stats),
    }
    return _finish(rq_job, rt, request, files, summary, t0)


def _source_dataset(info: Any) -> Any:
    """The input's DICOM header (derived outputs join its study), or an empty one for PNG/TIFF."""
    from pydicom.dataset import Dataset

    ds = getattr(info, "dataset", None)
    return ds if ds is not None else Dataset()


def anomaly_map(job: dict[str, Any]) -> dict[str, Any]:
    """Heat map, binary mask, overlay and healthy reconstruction of an uploaded mammogram."""
    from models.imaging.dicom_seg import ABNORMAL, SegmentInfo, write_segmentation
    from models.imaging.dicom_write import write_derived_dicom

    t0 = time.perf_counter()
    request, rq_job, rt, progress, image, info = _start_upload(AnomalyMapJob.from_dict(job))
    pipe = rt.anomaly()
    result = pipe(image, request.request, info=info, callback=progress, cancel=progress.cancelled)
    heat = np.clip(result.heatmap, 0.0, None).astype(np.float32)
    peak = float(heat.max()) if heat.size else 0.0
    heat01 = heat / peak if peak > 0 else heat  # displayed maps are scaled to their peak; NPY keeps raw values
    formats = request.formats
    source = _source_dataset(info)
    name, version = pipe.mambo.name, pipe.mambo.version

    def dicom(path: Any) -> object:
        return write_derived_dicom(
            path,
            heat01,
            source,
            description="anomaly heat map",
            model_name=name,
            model_version=version,
            value_range=(0.0, peak),  # the modality LUT gives back the raw residual
        )

    files = _write_image(rt.store, rq_job.id, "heatmap", heat01, formats, dicom)
    if "npy" in formats:
        files[[f.name for f in files].index("heatmap.npy")] = rt.store.write_npy(rq_job.id, "heatmap.npy", heat)
    files.append(rt.store.write_png16(rq_job.id, "mask.png", result.mask.astype(np.float32)))
    files.append(rt.store.write_png8(rq_job.id, "overlay.png", result.overlay()))
    files.append(rt.store.write_png16(rq_job.id, "reconstruction.png", result.reconstruction))
    if "dicom-seg" in formats:  # the mask on the input's own pixel grid, referencing the input instance
        segment = SegmentInfo("anomaly", ABNORMAL, name, version)
        files.append(
            rt.store.write_with(
                rq_job.id, "mask_seg.dcm", lambda path: write_segmentation(path, result.mask, source, segment)
            )
        )
    rt.store.delete_upload(rq_job.id)
    summary = {
        "model": {"kind": "mambo", "name": name, "version": version},
        "input": {"format": info.format, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "heat_peak": round(peak, 6),
        "anomalous_fraction": round(float(result.mask.sum()) / max(1, int(result.region.sum())), 6),
        "options": request.request.options.to_dict(),
        "stats": _jsonable(result.stats),
    }
    return _finish(rq_job, rt, request, files, summary, t0)


def insert_lesion(job: dict[str, Any]) -> dict[str, Any]:
    """Lesions into an uploaded mammogram: the edited image, one label mask per lesion, their union,
    lesions.json and (DICOM input) the derived DICOM with the masks as SEG: what `mammogen insert-lesion`
    writes, by the same functions (``models.lesion_outputs``)."""
    from models.lesion_outputs import REPORT, read_mask, report, write_edited, write_masks, write_report

    t0 = time.perf_counter()
    rq_job, rt, progress = _start()

    def load_mask(stored: Any) -> np.ndarray:  # an uploaded lesion mask, checked by the API, from the store
        return read_mask(rt.store.upload_path(rq_job.id, stored.name), stored.name)

    request = InsertLesionJob.from_dict(job, load_mask)
    image, info = _read_upload(rt, rq_job.id, request)
    inserter = rt.lesion_inserter()
    insertion = request.request
    result = inserter(
        image, insertion.lesions, insertion.options, info=info, callback=progress, cancel=progress.cancelled
    )
    mambo = inserter.mambo
    folder = rt.store.job_dir(rq_job.id)
    paths = write_edited(
        folder, result, formats=request.formats, info=info, model_name=mambo.name, model_version=mambo.version
    ) + write_masks(folder, result.masks)
    files = [rt.store.record(p) for p in paths]
    summary = {
        "model": {"kind": "mambo", "name": mambo.name, "version": mambo.version},
        "input": {"format": info.format, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "options": insertion.options.to_dict(),
    }
    body = report(
        result,
        bundle={"name": mambo.name, "version": mambo.version},
        input=summary["input"],
        files=[f.name for f in files] + [REPORT],
        extra={"acceleration": rt.acceleration_info()["label"], "options": summary["options"]},
    )
    files.append(rt.store.record(write_report(folder / REPORT, body)))
    rt.store.delete_upload(rq_job.id)
    summary.update(lesions=body["lesions"], edited_pixels=body["edited_pixels"], stats=_jsonable(result.stats))
    return _finish(rq_job, rt, request, files, summary, t0)
