"""Cross-check our zero-cost proxies against NASLib's published NB201 scores on many cells.

The unit test (tests/test_naslib_crosscheck.py) checks 40 cells; this script measures the same
agreement on more cells once, for docs/proxies.md. For each proxy it prints the Kendall/Spearman
between our scores and NASLib's for the same cells (NASLib's settings: batch 32, PyTorch default init;
our probe images are synthetic), the median relative difference of the values, and both scores'
Kendall with the NB201 test accuracy.

    python benchmarks/rank_naslib_crosscheck.py --dataset cifar10 --cells 200 --out runs/xcheck-c10
    python benchmarks/rank_naslib_crosscheck.py --write-cells runs/naslib200.txt --cells 200

``--write-cells`` only writes the seeded cell subset (NASLib tuples, one per line) for
``diswot rank --space nb201 --archs FILE``, so a ranking covers exactly the cells NASLib scored.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diswot.rank.naslib import NASLIB_PROXIES, naslib_cells, naslib_crosscheck


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10", help="cifar10, cifar100 or ImageNet16-120")
    ap.add_argument("--cells", type=int, default=200, help="number of NASLib cells (seeded subset)")
    ap.add_argument("--cell-seed", type=int, default=0, help="seed of the cell subset")
    ap.add_argument("--proxy", default=",".join(NASLIB_PROXIES), help="comma list of proxies")
    ap.add_argument("--batch-size", type=int, default=32, help="probe batch (NASLib used 32)")
    ap.add_argument("--init", default="default", help="default (NASLib) or gaussian")
    ap.add_argument("--out", default=None, help="folder for crosscheck.json and crosscheck.md")
    ap.add_argument("--write-cells", default=None, help="only write the cell list to this file")
    args = ap.parse_args()

    cells = naslib_cells(args.cells, args.cell_seed)
    if args.write_cells:
        Path(args.write_cells).write_text("".join(f"{c}\n" for c in cells))
        print(f"wrote {len(cells)} NASLib cells to {args.write_cells}")
        return
    t0, c0 = time.perf_counter(), time.process_time()
    res = naslib_crosscheck(
        args.dataset,
        cells,
        [p.strip() for p in args.proxy.split(",") if p.strip()],
        batch_size=args.batch_size,
        init=args.init,
        progress=True,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lines = [
        f"NB201 {args.dataset}, {len(cells)} NASLib cells (seed {args.cell_seed}), batch "
        f"{args.batch_size}, init {args.init}; {wall:.0f} s wall, {cpu:.0f} s CPU",
        "",
        "| proxy | Kendall ours vs NASLib | Spearman | median rel. diff | Kendall ours vs acc | "
        "Kendall NASLib vs acc | non-finite ours/NASLib |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, r in sorted(res.items(), key=lambda kv: -kv[1]["kendall"]):
        lines.append(
            f"| `{p}` | {r['kendall']:.3f} | {r['spearman']:.3f} | {r['rel_diff']:.2%} | "
            f"{r['kendall_acc']:.3f} | {r['ref_kendall_acc']:.3f} | "
            f"{r['n_nonfinite']}/{r['ref_nonfinite']} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "crosscheck.md").write_text(text + "\n")
        (out / "crosscheck.json").write_text(
            json.dumps({"args": vars(args), "wall_s": wall, "cpu_s": cpu, "results": res})
        )


if __name__ == "__main__":
    main()
