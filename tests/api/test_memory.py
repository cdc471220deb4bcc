"""Memory per request is bounded: huge images wait for room in the memory budget instead of piling up,
and what they used is handed back afterwards. Measured on a real server's resident memory."""

import asyncio
import time

import httpx
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless
from tests.conftest import RunningServer
from tests.dicom.pictures import wrap_rgb
from tests.hostile_files import canvas_gif, flat_webp

from lesionseg.api.memory_budget import estimate_bytes

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

BUDGET_MB = 512


def resident_megabytes(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS), or the most since the process started (VmHWM)."""
    for line in open(f"/proc/{pid}/status").read().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def jpeg_2000_dicom(side: int) -> bytes:
    """A flat side×side picture (64 megapixels at 8000) as a JPEG 2000 DICOM file of a few hundred kilobytes: its
    codec decodes it whole."""
    return wrap_rgb(np.full((side, side, 3), 120, np.uint8), JPEG2000Lossless)


# Python's own allocations, the response bytes and the decoder's buffers beside the reserved images.
SLACK_MB = 300


@pytest.fixture(scope="module")
def budgeted_server():
    server = RunningServer(memory_budget_mb=str(BUDGET_MB))
    yield server
    server.stop()


def test_four_canvas_gifs_at_once_stay_within_the_budget_and_memory_comes_back(budgeted_server):
    """Each 35-byte GIF claims an 8000×8000 screen: about 0.15 GB of work for format=mask, 0.6 GB for
    four at once without the budget."""
    data = canvas_gif(8000)
    pid = budgeted_server.process.pid
    idle = resident_megabytes(pid)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=budgeted_server.url, timeout=120) as client:
            uploads = [
                client.post("/predict/", files={"file": ("canvas.gif", data, "image/gif")}, params={"format": "mask"})
                for _ in range(4)
            ]
            health = [client.get("/health") for _ in range(3)]
            return await asyncio.gather(*uploads, *health)

    responses = asyncio.run(burst())
    assert [response.status_code for response in responses] == [200] * 7
    peak = resident_megabytes(pid, "VmHWM")
    assert peak - idle <= BUDGET_MB + SLACK_MB, f"idle {idle:.0f} MB, peak {peak:.0f} MB"
    # Well under the four requests' working memory (4 × 256 MB): what the allocator's two arenas keep.
    assert resident_megabytes(pid) - idle <= 150, (
        f"the huge requests' memory was not handed back: idle {idle:.0f} MB, now {resident_megabytes(pid):.0f} MB"
    )


@pytest.mark.parametrize(
    ("kind", "output"),
    [
        ("gif", "mask"),
        ("gif", "json"),
        ("gif", "png"),
        ("gif", "uncertainty"),
        ("gif", "overlay"),
        ("turned webp", "mask"),
        ("turned webp", "overlay"),
        ("jpeg 2000 dicom", "mask"),
        ("jpeg 2000 dicom", "dicom-pmap"),
    ],
)
def test_one_64_megapixel_request_uses_no_more_than_the_budget_reserves_for_it(budgeted_server, kind, output):
    """The budget is only as good as its estimates: measured from the moment the request starts (writing 5
    to clear_refs resets the kernel's peak to the current size), the peak stays under the estimate. The GIF
    is the cheapest attack; the turned WebP, decoded whole and held twice to be shown, the costliest; a JPEG 2000
    DICOM picture is decoded whole by its codec."""
    pid = budgeted_server.process.pid
    time.sleep(0.5)
    with open(f"/proc/{pid}/clear_refs", "w") as stream:
        stream.write("5")
    idle = resident_megabytes(pid)
    making = {"gif": canvas_gif, "turned webp": lambda side: flat_webp(side, orientation=6)}
    data = {**making, "jpeg 2000 dicom": jpeg_2000_dicom}[kind](8000)
    response = httpx.post(
        f"{budgeted_server.url}/predict/",
        files={"file": ("picture", data, "application/octet-stream")},
        params={"format": output},
        timeout=120,
    )
    assert response.status_code == 200
    extra = resident_megabytes(pid, "VmHWM") - idle
    estimate = estimate_bytes(data, output) / 2**20
    assert extra <= estimate, f"{output}: {extra:.0f} MB used, {estimate:.0f} MB reserved"
