"""A real Orthanc PACS for the tests: Debian's ``orthanc`` with the ``orthanc-dicomweb`` plugin.

Each server runs on 127.0.0.1 on free ports, with a temporary storage folder and a generated
configuration (DICOMweb on, no authentication, remote access off), under ``nice -n 19``. Where
Orthanc or its plugin is missing the tests skip on a developer machine and FAIL under CI.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.dicom_validation import require_tool
from tests.service_support import free_port, missing

#: Where Debian's orthanc-dicomweb installs its plugin (the first is the versionless plugin link).
PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so*")


def dicomweb_plugin() -> str:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    missing("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")


class Orthanc:
    """One Orthanc process; ``stop()`` and ``start()`` again keep its storage (a PACS outage)."""

    def __init__(self, root: Path) -> None:
        self.binary = shutil.which("Orthanc") or self._sbin()
        self.root = root
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = "MGTESTPACS"
        storage = root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        self.config.write_text(
            json.dumps(
                {
                    "Name": "mammogen-test",
                    "StorageDirectory": str(storage),
                    "IndexDirectory": str(storage),
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "DicomAet": self.aet,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomCheckCalledAet": True,
                    "DicomAlwaysAllowStore": True,
                    "Plugins": [dicomweb_plugin()],
                    "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                    "StableAge": 1,
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _sbin() -> str:
        path = "/usr/sbin/Orthanc"
        if os.path.isfile(path):
            return path
        return require_tool("Orthanc", "apt-get install orthanc orthanc-dicomweb")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> None:
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", self.binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"Orthanc did not answer within 60 s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.root / "orthanc.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # what the PACS holds -------------------------------------------------------------------------
    def instance_file(self, sop_instance_uid: str) -> bytes | None:
        """The DICOM file Orthanc stored for a SOP instance UID, or None when it has none."""
        found = requests.post(f"{self.url}/tools/lookup", data=sop_instance_uid, timeout=10).json()
        ids = [item["ID"] for item in found if item.get("Type") == "Instance"]
        if not ids:
            return None
        r = requests.get(f"{self.url}/instances/{ids[0]}/file", timeout=30)
        r.raise_for_status()
        return r.content

    def upload(self, data: bytes) -> None:
        requests.post(f"{self.url}/instances", data=data, timeout=30).raise_for_status()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
