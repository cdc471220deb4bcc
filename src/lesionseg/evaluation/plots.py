"""Reliability diagram and risk–coverage curve, as PNG files."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_reliability(reports: dict[str, dict], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    for set_name, report in reports.items():
        rows = report["reliability"]
        axis.plot(
            [row["mean_probability"] for row in rows],
            [row["observed_frequency"] for row in rows],
            marker="o",
            label=f"{set_name} (ECE {report['pixel']['ece']:.3f})",
        )
    axis.set(xlabel="mean predicted lesion probability", ylabel="observed lesion frequency", title="Pixel reliability")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_risk_coverage(reports: dict[str, dict], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for set_name, report in reports.items():
        rows = report["risk_coverage"]
        axis.plot(
            [100 * row["referred_fraction"] for row in rows],
            [row["mean_thresholded_jaccard"] for row in rows],
            marker="o",
            label=set_name,
        )
    axis.set(
        xlabel="most uncertain images referred to a person (%)",
        ylabel="mean thresholded Jaccard of the rest",
        title="Risk–coverage",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
