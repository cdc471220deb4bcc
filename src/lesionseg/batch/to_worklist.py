"""A folder (or a manifest) of pictures into a running service's review worklist: `lesionseg add-cases`.

Each picture is sent as `POST /cases` would get it from the page, with its file name and, as `external_id`,
its identifier (the file name without its suffix, or the manifest's `identifier`). Rerunning is safe: a picture
whose bytes the worklist already holds (`GET /cases?image_sha256=`) is not sent again. The service does the
segmenting; this side reads files and talks HTTP, so it needs nothing beyond the standard library. One
picture's failure (unreadable, refused, the service busy for longer than the retries) is counted and reported,
never the end of the run.
"""

import hashlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

from tqdm import tqdm

from lesionseg.batch.inputs import JobImage
from lesionseg.imaging.decode import read_image_file

# What POST /cases takes as external_id (printable ASCII, 1 to 200 characters); other names go as the file name.
EXTERNAL_ID_PATTERN = re.compile(r"[\x20-\x7e]{1,200}")
# A 503 (the service's queue is full) is retried after its Retry-After, this many times.
BUSY_RETRIES = 5
TIMEOUT_SECONDS = 300


@dataclass
class WorklistSummary:
    added: int = 0
    already_there: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (identifier, why)


class ServiceRefused(Exception):
    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after


class WorklistClient:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}

    def send(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read()).get("detail", error.reason)
            except ValueError:
                detail = error.reason
            retry_after = error.headers.get("Retry-After")
            raise ServiceRefused(error.code, str(detail), float(retry_after) if retry_after else None) from None

    def holds(self, sha256: str) -> bool:
        return bool(self.send("GET", f"/cases?limit=1&image_sha256={sha256}")["cases"])

    def add(self, data: bytes, filename: str, external_id: str | None, query: dict[str, str]) -> dict:
        boundary = uuid.uuid4().hex
        quoted = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        parameters = {**query, **({"external_id": external_id} if external_id else {})}
        path = "/cases" + (f"?{urllib.parse.urlencode(parameters)}" if parameters else "")
        content_type = f"multipart/form-data; boundary={boundary}"
        for _ in range(BUSY_RETRIES):
            try:
                return self.send("POST", path, body, content_type)
            except ServiceRefused as refused:
                if refused.status != 503:
                    raise
                time.sleep(refused.retry_after or 1.0)
        return self.send("POST", path, body, content_type)  # the last try: a 503 now is the picture's failure


def add_to_worklist(
    items: list[JobImage], client: WorklistClient, query: dict[str, str], max_bytes: int
) -> WorklistSummary:
    summary = WorklistSummary()
    for item in tqdm(items, desc="adding to the worklist", unit="image"):
        if item.problem is not None:
            summary.failed.append((item.identifier, item.problem))
            continue
        try:
            data = read_image_file(item.path, max_bytes)
            if client.holds(hashlib.sha256(data).hexdigest()):
                summary.already_there += 1
                continue
            external_id = item.identifier if EXTERNAL_ID_PATTERN.fullmatch(item.identifier) else None
            client.add(data, item.path.rsplit("/", 1)[-1], external_id, query)
            summary.added += 1
        except ServiceRefused as refused:
            if refused.status in (401, 403):  # every other picture would be refused the same way
                raise ValueError(f"the service refused the key ({refused.detail}); set LESIONSEG_API_KEY") from None
            summary.failed.append((item.identifier, refused.detail))
        except urllib.error.URLError as error:  # no service there: every other picture would fail the same way
            raise ValueError(f"cannot reach {client.url} ({error.reason})") from None
        except (OSError, ValueError) as error:
            summary.failed.append((item.identifier, getattr(error, "message", None) or str(error)))
    return summary
