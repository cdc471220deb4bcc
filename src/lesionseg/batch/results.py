"""The output folder of a batch job: files written atomically, one results row per image, resumable.

Only the job's driver writes here. On start it keeps the rows of images that finished (status ok
and both files present) and forgets the rest, so a rerun skips finished images and retries failed
or interrupted ones; each image then has exactly one row.
"""

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path

from lesionseg.batch.inputs import JobImage
from lesionseg.batch.worker import RESULT_COLUMNS, ImageOutcome, JobSettings, failed_row, output_files
from lesionseg.files import as_written, spreadsheet_safe, write_atomically
from lesionseg.model.sidecar import read_sidecar

# Settings that change an image's outputs: a rerun with other values would mix two jobs in one table.
DECIDING_SETTINGS = ("model_sha256", "backend", "samples", "seed", "threshold", "coverage", "tta")


# A spreadsheet takes a cell that starts with one of these as a formula (CSV injection): such a text cell is
# written after a quote mark, which spreadsheets show as text, and read back without it.
def job_description(job: JobSettings) -> dict:
    """job.json: the settings, the request's fields at the top level as before, and the model's checksum."""
    settings = asdict(job)
    request = settings.pop("request")
    return {**settings, **request, "model_sha256": read_sidecar(Path(job.weights)).sha256}


class ResultsTable:
    def __init__(self, output: Path, job: JobSettings) -> None:
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.table_path = self.output / "results.csv"
        self.job_path = self.output / "job.json"
        self.description = job_description(job)
        self.overlay = job.overlay
        self.check_same_job()
        self.finished = self.keep_finished_rows()
        self.recorded: set[str] = set()
        # This run's rows: how many were segmented or failed, and of the segmented, how many a person should see.
        self.counts = {"ok": 0, "failed": 0, "review_recommended": 0, "out_of_distribution": 0}
        self.stream = open(self.table_path, "a", newline="")
        self.writer = csv.DictWriter(self.stream, fieldnames=RESULT_COLUMNS)
        if self.stream.tell() == 0:
            self.writer.writeheader()

    def check_same_job(self) -> None:
        if self.job_path.is_file():
            previous = json.loads(self.job_path.read_text())
            changed = [key for key in DECIDING_SETTINGS if previous.get(key) != self.description[key]]
            if changed:
                details = ", ".join(f"{key} {previous.get(key)!r} -> {self.description[key]!r}" for key in changed)
                raise ValueError(f"{self.output} holds the results of another job ({details}); use a new folder")
        write_atomically(self.job_path, (json.dumps(self.description, indent=2) + "\n").encode())

    def keep_finished_rows(self) -> set[str]:
        if not self.table_path.is_file():
            return set()
        with open(self.table_path, newline="") as stream:
            rows = [as_written(row) for row in csv.DictReader(stream)]
        kept = [
            row
            for row in rows
            if row["status"] == "ok"
            # Overlays asked for on a rerun make the rows without them unfinished: those images run again.
            and all((self.output / name).is_file() for name in output_files(row["identifier"], self.overlay).values())
        ]
        temporary = self.table_path.with_name(".results.csv.partial")
        with open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows(spreadsheet_safe(row) for row in kept)
        os.replace(temporary, self.table_path)
        return {row["identifier"] for row in kept}

    def pending(self, items: list[JobImage]) -> list[JobImage]:
        return [item for item in items if item.identifier not in self.finished]

    def record(self, outcome: ImageOutcome) -> None:
        identifier = outcome.row["identifier"]
        if identifier in self.recorded:
            return  # a retried task that reported twice: the first report already wrote everything
        row = outcome.row
        try:
            for name, data in outcome.files.items():
                write_atomically(self.output / name, data)
        except OSError as error:
            # A full disk or a lost mount fails this image, not the job; the next may still fit.
            row = failed_row(identifier, row["path"], f"the outputs could not be written: {error.strerror}")
            row["worker"] = outcome.row["worker"]
        # The row goes last: a row in the table means its files are complete.
        self.write_row(row)
        self.recorded.add(identifier)

    def record_refused(self, item: JobImage) -> None:
        """An input refused before it was read (see batch/inputs.py); it has no files."""
        self.write_row(failed_row(item.identifier, item.path, item.problem))

    def write_row(self, row: dict) -> None:
        self.writer.writerow(spreadsheet_safe(row))
        self.stream.flush()
        self.counts[row["status"]] += 1
        for flag in ("review_recommended", "out_of_distribution"):
            self.counts[flag] += row["status"] == "ok" and row[flag] in (True, "True")

    def close(self) -> None:
        self.stream.close()
