"""One process against two under torchrun, on real pairs, with the same global batch and seed: the
final ISIC validation Jaccard of the two should agree within 0.01.

    make ddp-check            # or: .venv/bin/python benchmarks/ddp_check.py [--epochs 3 ...]

Trains each run afresh into runs/ddp-check/{single,ddp} (their output in a .log beside each), one
after the other so they do not share the cores, then prints their losses and Jaccards per epoch and
writes benchmarks/results/ddp_check.json.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DATA_ROOT = REPOSITORY.parent / "shared" / "data"
OUTPUT_ROOT = REPOSITORY / "runs" / "ddp-check"
RESULTS = REPOSITORY / "benchmarks" / "results" / "ddp_check.json"
TARGET = 0.01
LAUNCHERS = {
    "single": [sys.executable],
    "ddp": [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"],
}


def run_training(name: str, training_options: list[str]) -> tuple[list[dict], float]:
    """Trains one run from scratch; returns its log rows and its wall-clock seconds."""
    output_directory = OUTPUT_ROOT / name
    # A check measures the code as it is now, so it never resumes a run an older version left behind.
    shutil.rmtree(output_directory, ignore_errors=True)
    log_path = OUTPUT_ROOT / f"{name}.log"
    command = [*LAUNCHERS[name], "-m", "lesionseg.cli", "train", "--output-directory", str(output_directory)]
    command += training_options
    print(f"{name}: {' '.join(command)}  (output in {log_path.relative_to(REPOSITORY)})", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPOSITORY, check=True)
    return json.loads((output_directory / "log.json").read_text()), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples-per-epoch", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch, split between the two")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
    training_options = [
        f"--data-root={arguments.data_root}",
        f"--epochs={arguments.epochs}",
        f"--samples-per-epoch={arguments.samples_per_epoch}",
        f"--batch-size={arguments.batch_size}",
        f"--threads={arguments.threads}",
        f"--seed={arguments.seed}",
    ]
    logs, seconds = {}, {}
    for name in LAUNCHERS:
        logs[name], seconds[name] = run_training(name, training_options)

    columns = ("epoch", "loss 1 proc", "loss 2 proc", "Jaccard 1 proc", "Jaccard 2 proc", "difference")
    print(" ".join(f"{column:>14}" for column in columns))
    for single, ddp in zip(logs["single"], logs["ddp"], strict=True):
        difference = ddp["isic2018_jaccard"] - single["isic2018_jaccard"]
        print(
            f"{single['epoch']:>14} {single['train_loss']:>14.5f} {ddp['train_loss']:>14.5f}"
            f" {single['isic2018_jaccard']:>14.5f} {ddp['isic2018_jaccard']:>14.5f} {difference:>+14.5f}"
        )
    final_difference = logs["ddp"][-1]["isic2018_jaccard"] - logs["single"][-1]["isic2018_jaccard"]
    print(f"wall-clock: one process {seconds['single']:.0f} s, two processes {seconds['ddp']:.0f} s")
    print(f"final isic2018 validation Jaccard difference (2 processes - 1): {final_difference:+.5f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"options": training_options, "logs": logs, "seconds": seconds}, indent=2) + "\n")
    agrees = abs(final_difference) <= TARGET
    print("PASS" if agrees else f"FAIL: the final ISIC Jaccards differ by more than {TARGET}")
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
