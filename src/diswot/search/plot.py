"""The run folder's ``progress.png``: how the search improved, at a glance."""

from __future__ import annotations

from pathlib import Path

#: The progress plot's file name in the run folder.
PLOT = "progress.png"


def plot_progress(history: dict[str, list], path: Path, title: str) -> None:
    """Best score so far and the population's mean score against scored candidates."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: searches run on headless machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    nan = float("nan")
    steps = history["step"]
    ax.plot(steps, [nan if v is None else v for v in history["best"]], label="best so far")
    ax.plot(
        steps,
        [nan if v is None else v for v in history["population_mean"]],
        label="population mean",
        alpha=0.8,
    )
    ax.set_xlabel("scored candidates")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["PLOT", "plot_progress"]
