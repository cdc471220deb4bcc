"""A real PACS for the DICOM tests: Debian's Orthanc with its DICOMweb plugin, started from a generated
configuration in a temporary folder, on a loopback port, with credentials required, and stopped afterwards
(`make test` installs it: `make orthanc`)."""

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from tests.conftest import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USERNAME, PASSWORD = "lesionseg-worker", "a-password-for-the-tests"


@dataclass(frozen=True)
class Pacs:
    url: str  # the DICOMweb root
    username: str
    password: str

    @property
    def environment(self) -> dict[str, str]:
        """The settings `lesionseg dicomweb` reads its credentials from."""
        return {"LESIONSEG_DICOMWEB_USERNAME": self.username, "LESIONSEG_DICOMWEB_PASSWORD": self.password}

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.url, session=create_session_from_user_pass(self.username, self.password))


def orthanc_configuration(folder: Path, port: int) -> dict:
    return {
        "Name": "lesionseg-tests",
        "HttpPort": port,
        "DicomServerEnabled": False,  # DICOMweb only: no DIMSE port to find free
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USERNAME: PASSWORD},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


@pytest.fixture(scope="module")
def orthanc() -> Pacs:
    """An empty PACS for each test module; its DICOMweb root, and the credentials it asks for."""
    if not ORTHANC.is_file() or not DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed: `make orthanc` installs it")
    folder = Path(tempfile.mkdtemp(prefix="lesionseg-orthanc-"))
    port = free_port()
    configuration = folder / "orthanc.json"
    configuration.write_text(json.dumps(orthanc_configuration(folder, port), indent=2))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([str(ORTHANC), str(configuration)], stdout=log, stderr=subprocess.STDOUT)
    pacs = Pacs(f"http://127.0.0.1:{port}/dicom-web", USERNAME, PASSWORD)
    try:
        wait_until_answering(process, f"http://127.0.0.1:{port}/system", folder / "orthanc.log")
        yield pacs
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def wait_until_answering(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a bound: Orthanc answers within a second or two
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited at start-up:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, auth=(USERNAME, PASSWORD), timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Orthanc did not answer within 60 s:\n{log.read_text()[-4000:]}")
