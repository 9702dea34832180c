"""DisWOT, M_s and M_r over all 15,625 NAS-Bench-201 cells against their accuracy, from shipped scores.

``benchmarks/results/nb201-all-cells-h200.csv.gz`` holds the scores the ``full`` stage of
``benchmarks/gpu.py`` computed on an H200 (2026-11-26: ResNet-56 teacher, CIFAR-100 class count,
batch 64, seed 0, synthetic probe, N(0,1) init, strict fp32). GPU and CPU scores of the same cell
agree to a relative 7e-6 (that run's ``cpu_agreement`` stage), so the file stands for a CPU run,
which would take about 30 minutes on two cores. This reads it and prints Kendall tau and Spearman rho
of each score, and of the parameter count, against the shipped NATS-Bench test accuracy on CIFAR-10,
CIFAR-100 and ImageNet16-120 (larger is better for every column: DisWOT is ``-(M_s + M_r)``,
so ``ms`` and ``mr`` are negated here).

    python benchmarks/all_cells.py
    python benchmarks/all_cells.py --scores runs/gpu/full/scores.csv   # a fresh ``full`` stage
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

from diswot import bench, rankstats
from diswot.spaces import get_space

DEFAULT = Path(__file__).parent / "results" / "nb201-all-cells-h200.csv.gz"


def read_scores(path: Path) -> dict[str, dict[str, float]]:
    """arch -> {"diswot", "ms", "mr"} from a ``rank`` scores.csv (plain or gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:  # type: ignore[operator]
        return {
            r["arch"]: {k: float(r[k]) for k in ("diswot", "ms", "mr")} for r in csv.DictReader(f)
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", type=Path, default=DEFAULT)
    args = p.parse_args()
    scores = read_scores(args.scores)
    space = get_space("nb201")
    archs = sorted(scores)
    columns = {
        "diswot": [scores[a]["diswot"] for a in archs],
        "-ms": [-scores[a]["ms"] for a in archs],
        "-mr": [-scores[a]["mr"] for a in archs],
        "params": [space.cost(a, 100, 32).params for a in archs],
    }
    print(f"{len(archs)} cells from {args.scores}")
    print("| score | " + " | ".join(f"{d} tau / rho" for d in bench.NB201_DATASETS) + " |")
    print("|---|" + "---|" * len(bench.NB201_DATASETS))
    truth = {d: bench.nb201_accuracy(d) for d in bench.NB201_DATASETS}
    for name, values in columns.items():
        cells = []
        for d in bench.NB201_DATASETS:
            acc = [truth[d][a] for a in archs]
            tau, rho = rankstats.kendall(values, acc), rankstats.spearman(values, acc)
            cells.append(f"{tau:.4f} / {rho:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
