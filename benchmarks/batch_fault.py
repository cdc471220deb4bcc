"""A Ray batch job over real images survives a killed worker: every image written exactly once.

Runs `lesionseg batch --engine ray` over the first N images of a set, SIGKILLs one Ray Data actor once
some results are in (Ray restarts it and retries its rows), then checks the output folder: one
`ok` row per image, one mask and one uncertainty map per image, nothing else. Prints a table and
writes JSON.

    python benchmarks/batch_fault.py --images 2000
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def link_images(images: list[Path], folder: Path) -> Path:
    """A folder of links to the images, not copies: the data stays where its licence keeps it."""
    folder.mkdir()
    for image in images:
        (folder / image.name).symlink_to(image.resolve())
    return folder


def ray_actor_processes() -> list[int]:
    """Ray names its actor processes `ray::MapWorker(...)`, which /proc shows as their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::MapWorker"):
                found.append(int(entry.name))
    return found


def count_rows(table: Path) -> int:
    if not table.is_file():
        return 0
    with open(table, newline="") as stream:
        return sum(1 for _ in csv.DictReader(stream))


def run_with_a_kill(input_folder: Path, output: Path, kill_after_rows: int, timeout: float) -> dict:
    log_path = output.parent / "batch.log"
    with open(log_path, "w") as log:
        job = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "lesionseg"),
                "batch",
                str(input_folder),
                str(output),
                "--engine",
                "ray",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        killed_pid, deadline = None, time.monotonic() + timeout
        while job.poll() is None and time.monotonic() < deadline:
            if killed_pid is None and count_rows(output / "results.csv") >= kill_after_rows:
                actors = ray_actor_processes()
                if actors:
                    killed_pid = actors[0]
                    os.kill(killed_pid, signal.SIGKILL)
                    print(f"killed Ray actor process {killed_pid} after {count_rows(output / 'results.csv')} rows")
            time.sleep(0.2)
        if job.poll() is None:
            job.kill()
            raise SystemExit(f"the batch job did not finish in {timeout} s; see {log_path}")
    return {"exit_code": job.returncode, "killed_pid": killed_pid, "log": str(log_path)}


def check_outputs(output: Path, identifiers: list[str]) -> dict:
    with open(output / "results.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    row_counts = Counter(row["identifier"] for row in rows)
    masks = sorted(path.name for path in (output / "masks").iterdir())
    maps = sorted(path.name for path in (output / "uncertainty").iterdir())
    return {
        "images": len(identifiers),
        "rows": len(rows),
        "images_with_one_row": sum(1 for identifier in identifiers if row_counts[identifier] == 1),
        "rows_not_ok": sum(1 for row in rows if row["status"] != "ok"),
        "masks": len(masks),
        "uncertainty_maps": len(maps),
        "expected_files_present": masks == sorted(f"{i}_segmentation.png" for i in identifiers)
        and maps == sorted(f"{i}_uncertainty.png" for i in identifiers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--set", default="ham10000")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kill-after-rows", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--output", type=Path, default=REPOSITORY / "runs" / "batch-fault.json")
    arguments = parser.parse_args()

    images = sorted((arguments.data_root / arguments.set / "images").glob("*.jpg"))[: arguments.images]
    if len(images) < arguments.images:
        raise SystemExit(f"only {len(images)} images under {arguments.data_root / arguments.set / 'images'}")
    with tempfile.TemporaryDirectory() as workspace:
        input_folder = link_images(images, Path(workspace) / "input")
        output = Path(workspace) / "output"
        started = time.perf_counter()
        run = run_with_a_kill(input_folder, output, arguments.kill_after_rows, arguments.timeout)
        seconds = time.perf_counter() - started
        result = {**run, "seconds": round(seconds, 1), **check_outputs(output, [image.stem for image in images])}
        result["log"] = (Path(run["log"])).read_text()[-2000:]
    passed = (
        result["exit_code"] == 0
        and result["killed_pid"] is not None
        and result["images_with_one_row"] == result["images"] == result["rows"]
        and result["rows_not_ok"] == 0
        and result["expected_files_present"]
    )
    result["passed"] = passed
    print("| check | value |\n|---|---|")
    for key in ("images", "killed_pid", "rows", "images_with_one_row", "rows_not_ok", "masks", "uncertainty_maps"):
        print(f"| {key} | {result[key]} |")
    print(f"| expected files, nothing else | {result['expected_files_present']} |")
    print(f"| wall time (s) | {result['seconds']} |")
    print(f"| passed | {passed} |")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
