"""The PACS the service talks to: configured servers, STOW-RS / C-STORE out, WADO-RS in.

Only servers named in the configuration (``MAMMOGEN_PACS``) are ever contacted: a request names
one by its key, never by an address. Every network call has a bounded timeout and no hidden
retries (dicomweb-client's own retrying is switched off): the delivery outbox
(`workers.delivery`) owns the retry policy, and the API answers at once when a source is down.

Input from a PACS obeys the upload limits: the instance's size is checked from its metadata before
any pixel data is fetched, and the body is counted while it streams, so a PACS cannot push more
than ``max_bytes`` into the API.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from requests.adapters import HTTPAdapter

from models.errors import BadInputError, PayloadTooLargeError, UpstreamError

#: DICOM UIDs: digits and dots, at most 64 characters (PS3.5 9.1). Checked before a URL is built.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: C-STORE statuses that mean "stored" (success, and the warnings: coerced, elements discarded, ...).
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DicomWebServer(BaseModel):
    """A DICOMweb server (Orthanc, dcm4chee, a cloud store): STOW-RS out, WADO-RS in."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dicomweb"] = "dicomweb"
    url: str = Field(description="Base URL of the DICOMweb service, e.g. http://pacs:8042/dicom-web")
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="Connect and read timeout of each request.")
    send_all: bool = Field(default=False, description="Deliver every job's DICOM results here.")
    source: bool = Field(default=True, description="May be named as the input of /super-resolve or /anomaly-map.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"DICOMweb url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


class DicomNode(BaseModel):
    """A DICOM node that accepts C-STORE (a classic PACS or archive)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dimse"]
    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(min_length=1, max_length=16, description="The node's (called) AE title.")
    calling_ae_title: str = Field(default="MAMMOGEN", min_length=1, max_length=16)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    send_all: bool = Field(default=False, description="Deliver every job's DICOM results here.")


PacsServer = Annotated[DicomWebServer | DicomNode, Field(discriminator="kind")]


@dataclass(frozen=True)
class InstanceRef:
    """A study / series / SOP instance UID triple on a named server."""

    server: str
    study_uid: str
    series_uid: str
    instance_uid: str

    def __post_init__(self) -> None:
        for name in ("study_uid", "series_uid", "instance_uid"):
            value = getattr(self, name)
            if not (isinstance(value, str) and len(value) <= 64 and _UID.match(value)):
                raise BadInputError(f"{name} must be a DICOM UID (digits and dots, at most 64 characters)")


def source_server(servers: dict[str, Any], name: str) -> DicomWebServer:
    """The configured DICOMweb server ``name`` that may serve inputs; BadInputError otherwise."""
    server = servers.get(name)
    if not isinstance(server, DicomWebServer) or not server.source:
        usable = sorted(k for k, v in servers.items() if isinstance(v, DicomWebServer) and v.source)
        raise BadInputError(f"no configured DICOMweb input server {name!r} (configured: {', '.join(usable) or 'none'})")
    return server


# -- DICOMweb ------------------------------------------------------------------------------------
class _CappedAdapter(HTTPAdapter):
    """Refuses a response body over ``max_bytes``: declared (Content-Length) or counted as it streams."""

    def __init__(self, max_bytes: int | None) -> None:
        super().__init__(max_retries=0)
        self.max_bytes = max_bytes

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        if self.max_bytes is None:
            return response
        cap = self.max_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cap:
            response.close()
            raise PayloadTooLargeError(f"the PACS instance is {declared} bytes; the upload limit is {cap}")
        raw_read = resp.read
        seen = 0

        def counted_read(*args: Any, **kwargs: Any) -> bytes:
            nonlocal seen
            chunk = raw_read(*args, **kwargs)
            seen += len(chunk or b"")
            if seen > cap:
                raise PayloadTooLargeError(f"the PACS instance exceeds the upload limit of {cap} bytes")
            return chunk

        resp.read = counted_read
        return response


def _client(server: DicomWebServer, max_bytes: int | None = None) -> Any:
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    adapter = _CappedAdapter(max_bytes)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if server.username is not None:
        session.auth = (server.username, server.password.get_secret_value() if server.password else "")
    client = DICOMwebClient(server.url, session=session, timeout=server.timeout_s)
    client.set_http_retry_params(retry=False)
    return client


def _upstream(server_name: str, exc: BaseException) -> UpstreamError:
    return UpstreamError(f"PACS {server_name!r} failed: {type(exc).__name__}: {exc}"[:500])


def store_dicomweb(name: str, server: DicomWebServer, data: bytes) -> None:
    """STOW-RS one instance; UpstreamError unless the server lists it as stored."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    try:
        response = _client(server).store_instances([ds])
    except requests.RequestException as exc:
        raise _upstream(name, exc) from exc
    failed = [str(item.get("ReferencedSOPInstanceUID", "")) for item in response.get("FailedSOPSequence", [])]
    stored = [str(item.get("ReferencedSOPInstanceUID", "")) for item in response.get("ReferencedSOPSequence", [])]
    if failed or ds.SOPInstanceUID not in stored:
        reasons = [f"{item.get('FailureReason', '?')}" for item in response.get("FailedSOPSequence", [])]
        raise UpstreamError(f"PACS {name!r} did not store {ds.SOPInstanceUID} (failure reasons: {reasons or 'none'})")


def retrieve_dicomweb(
    server: DicomWebServer, ref: InstanceRef, *, max_bytes: int, max_pixels: int, max_side: int
) -> bytes:
    """WADO-RS one instance as DICOM file bytes, under the same limits as an upload.

    The metadata (JSON, small) is read first: an instance too large by its header is refused
    before any pixel data is fetched; then the body is counted while it streams.
    """
    import pydicom

    client = _client(server, max_bytes=max_bytes)
    uids = (ref.study_uid, ref.series_uid, ref.instance_uid)
    _check_size_metadata(_wado(ref, client.retrieve_instance_metadata, uids), max_pixels=max_pixels, max_side=max_side)
    ds = _wado(ref, client.retrieve_instance, uids)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


def _wado(ref: InstanceRef, call: Any, uids: tuple[str, str, str]) -> Any:
    """One WADO-RS call; a 404 is the client's bad reference, anything else the server's failure."""
    try:
        return call(*uids)
    except requests.HTTPError as exc:
        raise _http_error(ref, exc) from exc
    except requests.RequestException as exc:
        raise _upstream(ref.server, exc) from exc


def _http_error(ref: InstanceRef, exc: requests.HTTPError) -> Exception:
    status = exc.response.status_code if exc.response is not None else None
    if status == 404:
        return BadInputError(
            f"PACS {ref.server!r} has no instance {ref.instance_uid} in series {ref.series_uid} "
            f"of study {ref.study_uid}"
        )
    return _upstream(ref.server, exc)


def _check_size_metadata(meta: dict[str, Any], *, max_pixels: int, max_side: int) -> None:
    def value(tag: str) -> int:
        try:
            return int(meta[tag]["Value"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            return 1 if tag == "00280008" else 0

    rows, cols, frames = value("00280010"), value("00280011"), value("00280008")
    if rows <= 0 or cols <= 0:
        raise BadInputError("the PACS instance is not an image (its metadata has no Rows/Columns)")
    if max(rows, cols) > max_side:
        raise PayloadTooLargeError(f"image is {rows}x{cols}; the longest side allowed is {max_side}")
    if rows * cols * frames > max_pixels:
        raise PayloadTooLargeError(f"image has {rows * cols * frames} pixels; at most {max_pixels} allowed")


# -- DIMSE ---------------------------------------------------------------------------------------
def store_dimse(name: str, node: DicomNode, data: bytes) -> None:
    """C-STORE one instance in its own association; UpstreamError unless the node stored it."""
    import pydicom
    from pynetdicom import AE

    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title=node.calling_ae_title)
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout_s
    ae.connection_timeout = node.timeout_s
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise UpstreamError(f"DICOM node {name!r} ({node.host}:{node.port}) refused or did not answer the association")
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code not in _STORED:
        raise UpstreamError(f"DICOM node {name!r} answered C-STORE status 0x{code & 0xFFFF:04X}" if code >= 0 else
                            f"DICOM node {name!r} sent no C-STORE response (timeout or aborted)")  # fmt: skip


def store_instance(name: str, server: DicomWebServer | DicomNode, data: bytes) -> None:
    """Send one DICOM file to a configured server, whichever protocol it speaks."""
    if isinstance(server, DicomWebServer):
        store_dicomweb(name, server, data)
    else:
        store_dimse(name, server, data)
