"""``make run``'s search next to a busy neighbour: torch's default threads against the automatic choice.

Run ``python benchmarks/threads.py [--repeats 3] [--json]``. For each case the quick NB201 search
(``diswot search``, the built-in default) runs as a fresh process, timed by its wall clock, while a
neighbour process spins on one core (a pure-Python loop, the way another user's job holds a CPU):

* ``idle, auto``: no neighbour, the default thread choice;
* ``busy, --threads <cores>``: torch's default of one thread per core, which spins against the
  neighbour;
* ``busy, auto``: the default choice, which counts the neighbour's core as taken;
* ``busy, --threads 1``.

The figures are in docs/scale.md ("Threads on a shared machine").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _search(threads: int | None, out: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "diswot", "search", "--out", str(out)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    seconds = time.perf_counter() - t0
    text = done.stderr.replace("\r", "\n")
    note = next((ln[ln.index("threads") :] for ln in text.splitlines() if "(auto:" in ln), "")
    return seconds, note


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    cases: list[tuple[str, bool, int | None]] = [
        ("idle, auto", False, None),
        (f"busy, --threads {cores}", True, cores),
        ("busy, auto", True, None),
        ("busy, --threads 1", True, 1),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, busy, threads in cases:
            times, note = [], ""
            for r in range(args.repeats):
                spin = (
                    subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                )
                try:
                    time.sleep(0.5)
                    sec, note = _search(threads, Path(tmp) / f"{len(rows)}-{r}")
                finally:
                    if spin is not None:
                        spin.kill()
                        spin.wait()
                times.append(sec)
            rows.append(
                {
                    "case": name,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "max_s": max(times),
                    "note": note,
                }
            )
    if args.json:
        print(json.dumps({"cores": cores, "repeats": args.repeats, "rows": rows}, indent=2))
    else:
        print(
            f"{cores} usable cores, {args.repeats} runs per case, wall seconds of `diswot search`"
        )
        for r in rows:
            print(
                f"{r['case']:<22} median {r['median_s']:7.1f}  "
                f"({r['min_s']:.1f}-{r['max_s']:.1f})  {r['note']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
