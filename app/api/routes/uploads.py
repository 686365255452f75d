"""POST /super-resolve, /anomaly-map and /insert-lesion: a DICOM or PNG/TIFF upload plus form parameters
(and, for /insert-lesion, lesion masks as ``masks`` parts).

The body is capped while it streams (`app.api.limits`); `app.api.intake` then refuses, cheapest
first, a full queue (429), what the header rules out (415, 413, 422) and, decoding within the
API's memory budget, what the worker would refuse (422), so nothing bad is stored or queued.
Handlers are async: a request waiting for the budget holds no thread.

Instead of a file, the form may name an instance on a configured DICOMweb server (``pacs`` plus
study / series / instance UIDs): it is fetched with WADO-RS under the same byte and pixel limits
(`workers.pacs.retrieve_dicomweb`) and then goes through exactly the same checks as an upload.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.admission import (
    accepted,
    admit_cost,
    bundle_summary,
    check_callback,
    check_lesions_on_bundle,
    check_output_size,
    ensure_model_available,
    lesion_kinds,
    preprocess_config,
    resolve_delivery,
    tile_size,
    timeout_for,
)
from app.api.deps import ApiKeyDep, IdempotencyKeyDep, MetricsDep, StateDep
from app.api.intake import SUFFIX, Upload, decode_and_check, header_of, mask_stem, read_masks
from app.api.schemas import AnomalyMapParams, InsertLesionParams, JobAccepted, SuperResolveParams
from app.api.state import ServiceState
from models.errors import BadInputError, NotBuiltError
from models.input_checks import InputKind
from workers.job_requests import AnomalyMapJob, InsertLesionJob, SuperResolveJob
from workers.pacs import InstanceRef, retrieve_dicomweb, source_server

router = APIRouter(tags=["jobs"])
UploadParams = SuperResolveParams | AnomalyMapParams | InsertLesionParams

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Replay of an earlier request with the same Idempotency-Key."},
    202: {"description": "Queued; poll the Location."},
    401: {"description": "Missing or wrong X-API-Key."},
    413: {"description": "Upload over the limit; image or output over the pixel bounds; a decompression bomb."},
    415: {"description": "Not a DICOM, PNG or TIFF image (sniffed from the content)."},
    422: {"description": "Invalid parameters; a truncated, corrupt, blank or non-finite image; below one tile."},
    429: {"description": "Queue full; retry after Retry-After seconds."},
    501: {"description": "This version does not include the feature."},
    503: {"description": "The model's bundle is missing, or the API is busy decoding (Retry-After)."},
}


def _require(module: str, feature: str) -> None:
    """501 before anything is stored when this version lacks the feature's pipeline."""
    if importlib.util.find_spec(module) is None:
        raise NotBuiltError(f"{feature} is not built into this version of mammogen ({module} is missing)")


def _submit(
    state: ServiceState,
    job: SuperResolveJob | AnomalyMapJob | InsertLesionJob,
    params: UploadParams,
    upload: Upload,
    idempotency_key: str | None,
    principal: str,
    mask_parts: list[bytes] | None = None,
) -> Any:
    """Queue the job; its upload (and lesion masks) go to the upload store, never into Redis."""
    cost = admit_cost(state, job, breast_fraction=upload.breast_fraction)
    masks = getattr(job, "masks", ())

    def store_upload(job_id: str) -> None:
        state.store.save_upload(job_id, io.BytesIO(upload.data), SUFFIX[upload.info.format])
        for stored, data in zip(masks, mask_parts or (), strict=True):
            stem, _, suffix = stored.name.rpartition(".")
            state.store.save_upload(job_id, io.BytesIO(data), f".{suffix}", stem=stem)

    fingerprint = {**params.client_request(), "input_sha256": job.upload.sha256}
    if masks:
        fingerprint["masks_sha256"] = [m.sha256 for m in masks]
    return state.submitter.submit(
        job,
        client_request=fingerprint,
        timeout_s=timeout_for(state, cost),
        estimate=cost.to_dict(),
        idempotency=idempotency_key,
        principal=principal,
        prepare=store_upload,
        discard=state.store.delete_job,
        priority=params.priority,
        callback_url=check_callback(state, params.callback_url),
    )


def _from_pacs(state: ServiceState, params: UploadParams) -> bytes:
    """The named instance from a configured DICOMweb server, fetched under the upload limits."""
    s = state.settings
    ref = InstanceRef(params.pacs, params.study_uid, params.series_uid, params.instance_uid)  # type: ignore[arg-type]
    return retrieve_dicomweb(
        source_server(s.pacs, ref.server),
        ref,
        max_bytes=s.max_upload_bytes,
        max_pixels=s.max_image_pixels,
        max_side=s.max_image_side,
    )


async def _input_bytes(state: ServiceState, params: UploadParams, file: UploadFile | None) -> bytes:
    """The input image: the uploaded file, or the named instance on a configured DICOMweb server."""
    if params.pacs is None:
        if file is None:
            raise BadInputError(
                "no input: send the image as the 'file' part, or name it on a configured PACS "
                "(pacs, study_uid, series_uid, instance_uid)"
            )
        return await file.read()
    if file is not None:
        raise BadInputError("send either a file or a PACS reference (pacs and UIDs), not both")
    return await run_in_threadpool(_from_pacs, state, params)


def _check_dicom_outputs(formats: list[str], info: Any) -> None:
    """Refuse before decoding the DICOM outputs this input cannot give."""
    if "dicom-seg" in formats and info.format != "dicom":
        raise BadInputError("dicom-seg references its source image: it needs a DICOM input, not " + info.format)
    if "dicom-mg" in formats and (info.format != "dicom" or info.laterality is None or info.view not in ("CC", "MLO")):
        raise BadInputError(
            "dicom-mg needs a DICOM input that states its laterality and a CC or MLO view "
            f"(this input: {info.format}, laterality {info.laterality}, view {info.view}); use dicom instead"
        )


async def _admit_upload(
    request: Request,
    state: ServiceState,
    kind: InputKind,
    params: UploadParams,
    file: UploadFile | None,
    *,
    scale: int | None = None,
    resolution: str | None = None,
    after_header: Callable[[Upload], Awaitable[None]] | None = None,
) -> Upload:
    """Queue room, then the header (and the kind's own ``after_header`` checks), then the decode and the
    worker's checks: each step only if the last passed."""
    await run_in_threadpool(state.submitter.check_room, params.priority)
    upload = await header_of(await _input_bytes(state, params, file), state.settings)
    _check_dicom_outputs(params.formats or [], upload.info)
    if after_header is not None:
        await after_header(upload)
    if scale is not None:
        check_output_size(state, upload.info.height, upload.info.width, factor=scale)
    await run_in_threadpool(ensure_model_available, state, "mambo")
    summary = await run_in_threadpool(bundle_summary, state, "mambo")
    return await decode_and_check(
        upload,
        request.app.state.decode_budget,
        kind,
        tile=tile_size(summary),
        preprocess=preprocess_config(summary),
        scale=scale,
        resolution=resolution,
    )


@router.post(
    "/super-resolve",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue a super-resolution job",
    responses=_UPLOAD_RESPONSES,
)
async def super_resolve(
    request: Request,
    response: Response,
    state: StateDep,
    metrics: MetricsDep,
    principal: ApiKeyDep,
    params: Annotated[SuperResolveParams, Form()],
    file: Annotated[
        UploadFile | None,
        File(description="Low-resolution mammogram: DICOM, 8/16-bit PNG or TIFF (or name a PACS instance)."),
    ] = None,
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    _require("models.superres", "super-resolution")
    deliver = resolve_delivery(state, params.formats, params.deliver)  # cheap checks before any input is read
    upload = await _admit_upload(request, state, "super-resolve", params, file, scale=params.scale)
    job = params.job(upload.stored(), deliver)
    sub = await run_in_threadpool(_submit, state, job, params, upload, idempotency_key, principal)
    if not sub.replayed:
        metrics.submitted.labels(kind="super-resolve").inc()
    return await run_in_threadpool(accepted, request, response, sub)


@router.post(
    "/anomaly-map",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue an anomaly-map job",
    responses=_UPLOAD_RESPONSES,
)
async def anomaly_map(
    request: Request,
    response: Response,
    state: StateDep,
    metrics: MetricsDep,
    principal: ApiKeyDep,
    params: Annotated[AnomalyMapParams, Form()],
    file: Annotated[
        UploadFile | None,
        File(description="Mammogram to analyse: DICOM, 8/16-bit PNG or TIFF (or name a PACS instance)."),
    ] = None,
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    deliver = resolve_delivery(state, params.formats, params.deliver)  # cheap checks before any input is read
    upload = await _admit_upload(request, state, "anomaly-map", params, file, resolution=params.resolution)
    job = params.job(upload.stored(), deliver)
    sub = await run_in_threadpool(_submit, state, job, params, upload, idempotency_key, principal)
    if not sub.replayed:
        metrics.submitted.labels(kind="anomaly-map").inc()
    return await run_in_threadpool(accepted, request, response, sub)


@router.post(
    "/insert-lesion",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue a lesion insertion job",
    responses=_UPLOAD_RESPONSES,
)
async def insert_lesion(
    request: Request,
    response: Response,
    state: StateDep,
    metrics: MetricsDep,
    principal: ApiKeyDep,
    params: Annotated[InsertLesionParams, Form()],
    file: Annotated[
        UploadFile | None,
        File(
            description="Mammogram to insert the lesions into: DICOM, 8/16-bit PNG or TIFF (or name a PACS instance)."
        ),
    ] = None,
    masks: Annotated[
        list[UploadFile] | None,
        File(
            description="Lesion masks: label images of the image's size (PNG or TIFF; any non-zero pixel is "
            'lesion), one per lesion given as {"kind": ..., "mask": N} (N: the part\'s index, 0 = the first).'
        ),
    ] = None,
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    """Lesions of a chosen kind, place and size, or given by a mask, with their exact masks; only the pixels
    around each lesion change. Checked here: the form, the lesion list, the masks (size, lesion pixels), the
    kinds against the served bundle's lesion network and that each lesion lies on the image; in the breast
    and small enough: by the worker (a failed job)."""
    from models.lesion_outputs import check_formats, default_formats
    from models.lesion_spec import check_mask_refs

    await run_in_threadpool(ensure_model_available, state, "mambo")
    summary = await run_in_threadpool(bundle_summary, state, "mambo")
    lesion_kinds(summary)  # 503 before any input is read when the bundle has no lesion network
    check_mask_refs(params.mask_refs(), len(masks or ()))
    mask_parts = [await part.read() for part in masks or ()]
    resolved: list[Any] = []

    async def check_header(upload: Upload) -> None:  # before a pixel of the image is decoded
        info = upload.info
        stored, arrays = await read_masks(mask_parts, info, state.settings, request.app.state.decode_budget)
        insertion = params.insertion(arrays)
        check_lesions_on_bundle(summary, insertion.lesions, (info.height, info.width))
        formats = check_formats(params.formats or default_formats(info), info)
        resolved.append((insertion, formats, tuple(m.stored(mask_stem(i)) for i, m in enumerate(stored))))

    upload = await _admit_upload(request, state, "insert-lesion", params, file, after_header=check_header)
    insertion, formats, stored_masks = resolved[0]
    deliver = resolve_delivery(state, list(formats), params.deliver)
    if params.deliver and not deliver:
        raise BadInputError("deliver sends DICOM results: this request writes none (add dicom or dicom-mg to formats)")
    job = params.job(insertion, upload.stored(), formats, deliver, stored_masks)
    sub = await run_in_threadpool(_submit, state, job, params, upload, idempotency_key, principal, mask_parts)
    if not sub.replayed:
        metrics.submitted.labels(kind="insert-lesion").inc()
    return await run_in_threadpool(accepted, request, response, sub)
