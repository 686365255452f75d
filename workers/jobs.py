"""The job functions RQ runs: plain importable functions taking one JSON-able ``params`` dict.

Each one gets the process's loaded pipelines from `workers.runtime.current()`, passes progress
and the cancel flag down as callbacks (`workers.progress.JobProgress`), writes its images to
the result store atomically and returns only a manifest (file names, sizes, sha256, summary).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rq import get_current_job

from models.progress import Reporter
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


def _chest_wall(laterality: str) -> str:
    return "right" if laterality == "R" else "left"


def _write_image(
    store: ResultStore,
    job_id: str,
    stem: str,
    image: np.ndarray,
    formats: list[str],
    dicom: Callable[[Any], object] | None,
) -> list[ResultFile]:
    """One image in every requested format (float [0, 1] H x W)."""
    files = []
    if "png16" in formats:
        files.append(store.write_png16(job_id, f"{stem}.png", image))
    if "npy" in formats:
        files.append(store.write_npy(job_id, f"{stem}.npy", image.astype(np.float32)))
    if "dicom" in formats and dicom is not None:
        files.append(store.write_with(job_id, f"{stem}.dcm", dicom))
    return files


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
def generate(params: dict[str, Any]) -> dict[str, Any]:
    """MAMBO full-resolution images or dual-view CC + MLO pairs."""
    t0 = time.perf_counter()
    if params.get("model", "mambo") == "dualview":
        return _generate_dualview(params, t0)
    return _generate_mambo(params, t0)


def _generate_dualview(params: dict[str, Any], t0: float) -> dict[str, Any]:
    from models.dualview import DualViewPipeline
    from models.imaging.dicom_write import write_dualview_pair

    job, rt, progress = _start()
    pipe = rt.pipeline("dualview", DualViewPipeline.from_bundle)
    seed = _seed(params)
    lat = params.get("laterality", "R")
    result = pipe(
        int(params.get("count", 1)),
        seed=seed,
        num_inference_steps=int(params["steps"]),
        sampler=params["sampler"],
        eta=float(params.get("eta", 0.0)),
        laterality=lat,
        batch_size=int(params.get("max_batch") or 8),
        callback=progress,
        cancel=progress.cancelled,
    )
    formats = params["formats"]
    files: list[ResultFile] = []
    for i, (cc, mlo) in enumerate(zip(result.cc, result.mlo, strict=True)):
        stem = f"pair{i:02d}"
        files += _write_image(rt.store, job.id, f"{stem}_cc", cc, [f for f in formats if f != "dicom"], None)
        files += _write_image(rt.store, job.id, f"{stem}_mlo", mlo, [f for f in formats if f != "dicom"], None)
        if "dicom" in formats:  # CC and MLO of one breast: one study, one series (written atomically)
            paths = write_dualview_pair(
                rt.store.job_dir(job.id),
                cc,
                mlo,
                laterality=lat,
                model_name=pipe.name,
                model_version=pipe.version,
                seed=result.seeds[i],
                chest_wall=_chest_wall(lat),
                names=(f"{stem}_cc.dcm", f"{stem}_mlo.dcm"),
            )
            files += [rt.store.record(p) for p in paths]
    summary = {
        "model": {"kind": "dualview", "name": pipe.name, "version": pipe.version},
        "seeds": result.seeds,
        "laterality": lat,
        "stats": _jsonable(result.stats),
        "third_channel_error": [round(float(e), 5) for e in result.third_channel_error],
    }
    return _manifest(files, summary, t0)


def _generate_mambo(params: dict[str, Any], t0: float) -> dict[str, Any]:
    from models.imaging.dicom_write import write_synthetic_dicom
    from models.mambo import MamboPipeline

    job, rt, progress = _start()
    pipe = rt.pipeline("mambo", MamboPipeline.from_bundle)
    bundle = rt.bundle("mambo")
    base_seed = _seed(params)
    lat = params.get("laterality", "R")
    files: list[ResultFile] = []
    stats = []
    count = int(params.get("count", 1))
    for i in range(count):
        seed = base_seed + i
        kwargs: dict[str, Any] = {
            "height": params.get("height"),
            "width": params.get("width"),
            "seed": seed,
            "num_inference_steps": int(params["steps"]),
            "sampler": params["sampler"],
            "eta": float(params.get("eta", 0.0)),
            "stitching": params.get("stitching", "wavefront"),
            "chest_wall": _chest_wall(lat),
            "callback": _offset_progress(progress, i, count, t0),
            "cancel": progress.cancelled,
        }
        if params.get("max_batch"):
            kwargs["max_batch"] = int(params["max_batch"])
        result = pipe(**{k: v for k, v in kwargs.items() if v is not None})
        image = np.asarray(result.image, dtype=np.float32)

        def dicom(path: Any, image: np.ndarray = image, seed: int = seed) -> object:
            return write_synthetic_dicom(
                path,
                image,
                model_name=bundle.name,
                model_version=bundle.version,
                laterality=lat,
                seed=seed,
                chest_wall=_chest_wall(lat),
                extra_description="MAMBO",
            )

        files += _write_image(rt.store, job.id, f"image{i:02d}", image, params["formats"], dicom)
        stats.append(_jsonable(getattr(result, "stats", {})))
    summary = {
        "model": {"kind": "mambo", "name": bundle.name, "version": bundle.version},
        "seeds": [base_seed + i for i in range(count)],
        "laterality": lat,
        "stats": stats,
    }
    return _manifest(files, summary, t0)


def _offset_progress(progress: JobProgress, index: int, count: int, t0: float) -> Callable[[Any], None]:
    """Progress of image ``index`` of ``count`` as a fraction (and ETA) of the whole job."""
    from models.progress import Progress

    def callback(p: Progress) -> None:
        frac = (index + p.fraction) / count
        elapsed = time.perf_counter() - t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else None
        progress(Progress(p.stage, p.step, p.total, frac, elapsed, eta))

    return callback


def _seed(params: dict[str, Any]) -> int:
    """The request's seed, or a fresh random one (recorded in the job summary, so any result can be redone)."""
    seed = params.get("seed")
    return int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (2**31))


# -- uploads ------------------------------------------------------------------------------------
def _read_upload(rt: WorkerRuntime, job_id: str, params: dict[str, Any], kind: Any) -> tuple[np.ndarray, Any]:
    """The stored upload, decoded and put through the same checks the API ran before queueing it."""
    from models.imaging.readers import read_image
    from models.input_checks import check_input_image

    image, info = read_image(rt.store.upload_path(job_id, params["input_name"]))
    bundle = rt.bundle("mambo")
    scale, resolution = params.get("scale"), params.get("resolution")
    check_input_image(
        image,
        kind,
        tile=int(bundle.geometry["s"]),
        info=info,
        preprocess=bundle.preprocess,
        scale=int(scale) if scale is not None else None,
        resolution=resolution,
    )
    return image, info


def super_resolve(params: dict[str, Any]) -> dict[str, Any]:
    """A real low-resolution mammogram stands in for MAMBO's global (or mid) image; stages 2-3 add detail."""
    from models.imaging.dicom_write import write_derived_dicom
    from models.superres import SuperResConfig, SuperResolutionPipeline

    t0 = time.perf_counter()
    job, rt, progress = _start()
    image, info = _read_upload(rt, job.id, params, "super-resolve")
    pipe = rt.pipeline("mambo", SuperResolutionPipeline.from_bundle)
    bundle = rt.bundle("mambo")
    config = SuperResConfig(
        scale=int(params["scale"]),
        seed=_seed(params),
        num_inference_steps=int(params["steps"]),
        sampler=params["sampler"],
        eta=float(params.get("eta", 0.0)),
        stitching=params.get("stitching", "wavefront"),
        max_batch=int(params.get("max_batch") or 16),
        stand_in=params.get("stand_in", "auto"),
    )
    result = pipe(image, config, info=info, callback=progress, cancel=progress.cancelled)
    source = _source_dataset(info)

    def dicom(path: Any) -> object:
        return write_derived_dicom(
            path,
            result.image,
            source,
            description=f"super-resolution x{config.scale}",
            model_name=bundle.name,
            model_version=bundle.version,
        )

    files = _write_image(rt.store, job.id, "superres", result.image, params["formats"], dicom)
    rt.store.delete_upload(job.id)
    summary = {
        "model": {"kind": "mambo", "name": bundle.name, "version": bundle.version},
        "input": {"format": info.format, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "stats": _jsonable(result.stats),
    }
    return _manifest(files, summary, t0)


def _source_dataset(info: Any) -> Any:
    """The input's DICOM header (derived outputs join its study), or an empty one for PNG/TIFF."""
    from pydicom.dataset import Dataset

    ds = getattr(info, "dataset", None)
    return ds if ds is not None else Dataset()


def anomaly_map(params: dict[str, Any]) -> dict[str, Any]:
    """Heat map, binary mask, overlay and healthy reconstruction of an uploaded mammogram."""
    from models.anomaly import AnomalyConfig, AnomalyPipeline
    from models.imaging.dicom_write import write_derived_dicom

    t0 = time.perf_counter()
    job, rt, progress = _start()
    image, info = _read_upload(rt, job.id, params, "anomaly-map")
    pipe = rt.pipeline("mambo", AnomalyPipeline.from_bundle)
    bundle = rt.bundle("mambo")
    seed = _seed(params)
    config = AnomalyConfig(
        lam=int(params["timestep"]),
        seeds=tuple(seed + i for i in range(int(params.get("repeats", 1)))),
        sampler=params["sampler"],
        num_inference_steps=int(params["steps"]),
        eta=float(params.get("eta", 0.0)),
        threshold_mode=params.get("threshold_mode", "otsu"),
        threshold=params.get("threshold"),
        resolution=params.get("resolution", "global"),
        max_batch=int(params.get("max_batch") or 16),
    )
    result = pipe(image, config, info=info, callback=progress, cancel=progress.cancelled)
    heat = np.clip(result.heatmap, 0.0, None).astype(np.float32)
    peak = float(heat.max()) if heat.size else 0.0
    heat01 = heat / peak if peak > 0 else heat  # displayed maps are scaled to their peak; NPY keeps raw values
    formats = params["formats"]
    source = _source_dataset(info)

    def dicom(path: Any) -> object:
        return write_derived_dicom(
            path,
            heat01,
            source,
            description="anomaly heat map",
            model_name=bundle.name,
            model_version=bundle.version,
        )

    files = _write_image(rt.store, job.id, "heatmap", heat01, formats, dicom)
    if "npy" in formats:
        files[[f.name for f in files].index("heatmap.npy")] = rt.store.write_npy(job.id, "heatmap.npy", heat)
    files.append(rt.store.write_png16(job.id, "mask.png", result.mask.astype(np.float32)))
    files.append(rt.store.write_png8(job.id, "overlay.png", result.overlay()))
    files.append(rt.store.write_png16(job.id, "reconstruction.png", result.reconstruction))
    rt.store.delete_upload(job.id)
    summary = {
        "model": {"kind": "mambo", "name": bundle.name, "version": bundle.version},
        "input": {"format": info.format, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "heat_peak": round(peak, 6),
        "anomalous_fraction": round(float(result.mask.sum()) / max(1, int(result.region.sum())), 6),
        "stats": _jsonable(result.stats),
    }
    return _manifest(files, summary, t0)
