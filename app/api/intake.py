"""Upload intake: every check that can be made before a job is queued, cheapest first.

1. queue room (429), before anything is decoded;
2. the header (`probe_image`): format (415), dimensions, pixel count and expansion ratio (413),
   the output size at the requested scale (413) and the tile sizes (422), without decoding a pixel;
3. decoding plus the worker's own checks (`models.input_checks`), under a memory budget shared by
   every upload of this process: concurrent uploads wait (as coroutines, holding no thread) until
   their estimated decode memory fits in ``decode_memory_mb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from models.errors import BadInputError, MammogenError, ServerBusyError
from models.imaging.readers import ImageInfo, probe_image, read_image
from models.input_checks import InputKind, check_input_image, check_input_size
from models.preprocess import PreprocessConfig
from workers.job_requests import StoredUpload

log = logging.getLogger(__name__)

#: Peak bytes per pixel of decoding plus the preprocessing chain, with headroom. Measured: a
#: 3000 x 2400 16-bit PNG, 28 (decode 8, chain 20); a float64 TIFF's decode alone, 28.
DECODE_BYTES_PER_PIXEL = 48
SUFFIX = {"dicom": ".dcm", "png": ".png", "tiff": ".tif"}


class DecodeBudget:
    """A byte-weighted, first-come-first-served semaphore: the sum of reservations never exceeds
    ``capacity``; one request larger than the whole budget is clamped to it and runs alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._turn = asyncio.Lock()  # FIFO: a large request is not starved by a stream of small ones
        self._freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int, timeout_s: float | None = None) -> AsyncIterator[None]:
        n = max(1, min(int(nbytes), self.capacity))
        try:
            async with asyncio.timeout(timeout_s), self._turn, self._freed:
                await self._freed.wait_for(lambda: self.used + n <= self.capacity)
                self.used += n
        except TimeoutError:
            raise ServerBusyError(
                f"the server is busy decoding other uploads (decode_memory_mb = {self.capacity >> 20}); retry shortly"
            ) from None
        try:
            yield
        finally:
            async with self._freed:
                self.used -= n
                self._freed.notify_all()
            if self.used == 0:
                _return_freed_memory()


def _return_freed_memory() -> None:
    """Large decodes leave freed pages in glibc's per-thread arenas; hand them back to the system."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True)
class Upload:
    data: bytes
    info: ImageInfo
    breast_fraction: float | None = None  # set once decoded and checked

    def stored(self, stem: str = "input") -> StoredUpload:
        """What the job records about its input (the worker reads the stored file again)."""
        info = self.info
        name = f"{stem}{SUFFIX[info.format]}"
        return StoredUpload(name, info.format, info.height, info.width, hashlib.sha256(self.data).hexdigest())


async def read_header(file: UploadFile, settings: Any) -> Upload:
    """The bytes and what their header says, with the size and bomb bounds checked (nothing decoded)."""
    return await header_of(await file.read(), settings)


async def header_of(data: bytes, settings: Any) -> Upload:
    """``read_header`` for bytes that came another way (an instance fetched from a PACS)."""
    if not data:
        raise BadInputError("the uploaded file is empty")
    info = await run_in_threadpool(
        probe_image,
        data,
        max_pixels=settings.max_image_pixels,
        max_side=settings.max_image_side,
        max_pixels_per_byte=settings.max_pixels_per_byte,
    )
    return Upload(data, info)


async def decode_and_check(
    upload: Upload,
    budget: DecodeBudget,
    kind: InputKind,
    *,
    tile: int,
    preprocess: PreprocessConfig,
    scale: int | None = None,
    resolution: str | None = None,
) -> Upload:
    """Decode within the budget and run the worker's checks; the decoded pixels are dropped after."""
    check_input_size(kind, upload.info.height, upload.info.width, tile=tile, scale=scale, resolution=resolution)
    need = upload.info.height * upload.info.width * DECODE_BYTES_PER_PIXEL

    def work() -> float:
        image, info = read_image(upload.data, max_pixels=None, max_side=None)
        prepared = check_input_image(
            image, kind, tile=tile, info=info, preprocess=preprocess, scale=scale, resolution=resolution
        )
        return float(prepared.mask.sum()) / max(1, image.shape[0] * image.shape[1])

    async with budget.reserve(need, timeout_s=60.0):
        fraction = await run_in_threadpool(work)
    return Upload(upload.data, upload.info, breast_fraction=fraction)


def mask_stem(index: int) -> str:
    """The upload-store name (without suffix) of the request's ``index``-th lesion mask."""
    return f"mask-{index:02d}"


async def read_masks(
    parts: list[bytes], image: ImageInfo, settings: Any, budget: DecodeBudget
) -> tuple[list[Upload], list[np.ndarray]]:
    """Uploaded lesion masks, each checked as the image is: its header (415; 413 over the pixel and bomb
    bounds), the image's size (422), then decoded within the budget with at least one lesion pixel (422,
    `models.lesion_outputs.read_mask`, as the CLI reads ``--lesion-mask``). Errors name the masks part."""
    from models.lesion_outputs import read_mask

    headers = []
    for i, data in enumerate(parts):
        try:
            upload = await header_of(data, settings)
        except MammogenError as exc:
            raise type(exc)(f"masks part {i}: {exc.message}") from None
        h, w = upload.info.height, upload.info.width
        if (h, w) != (image.height, image.width):
            raise BadInputError(
                f"masks part {i} is {h}x{w}, the image {image.height}x{image.width}: a lesion mask has the image's size"
            )
        headers.append(upload)
    masks = []
    for i, upload in enumerate(headers):
        need = upload.info.height * upload.info.width * DECODE_BYTES_PER_PIXEL
        try:
            async with budget.reserve(need, timeout_s=60.0):
                masks.append(await run_in_threadpool(read_mask, upload.data))
        except BadInputError as exc:  # a corrupt body behind a good header, or no lesion pixel
            raise type(exc)(f"masks part {i}: {exc.message}") from None
    return headers, masks
