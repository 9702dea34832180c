"""Rank the shipped ViT students (``autoformer``, ``pit``) with DisWOT and other proxies.

Scores every student with ground truth against a randomly initialised CIFAR ResNet-56 teacher that
sees the probe batch resized to 32 px while the student sees it at 224 px (as in the ground truth's
training), with DisWOT's width-independent (class-relation) semantic form, then prints Kendall and
Spearman of every proxy against every target of the scored dataset, per ground-truth file and for the
whole set, with the ties and outliers behind each figure.

    python benchmarks/vit_rank.py score --space pit --dataset c100 [--batch-size 16] [--proxies ...]
    python benchmarks/vit_rank.py report --space pit --dataset c100 [--markdown]
    python benchmarks/vit_rank.py table --space pit  # every scored dataset in one Markdown table
    python benchmarks/vit_rank.py baseline            # params/FLOPs only: no network is run

Scores are appended to ``<out>/<space>-<dataset>-b<batch>/scores.jsonl`` as they are computed, so a
killed run resumes where it stopped and new proxies can be added to a finished run. ``dataset`` fixes
the class count (c100: 100, flowers: 102, chaoyang: 4) of the teacher, the students and the synthetic
probe labels; the targets reported are ``<dataset>_kd`` and ``<dataset>_base``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from diswot import rankstats
from diswot.models import create_model
from diswot.models.vit import ResizeInput
from diswot.proxies import get_proxy
from diswot.scoring import Scorer
from diswot.spaces import get_space

#: Proxies that cost one student forward pass beyond DisWOT's (none needs a backward pass).
FORWARD_ONLY = ("diswot", "ms", "mr", "kd", "ickd", "at", "rkd", "l2_norm", "params", "flops")


def _scorer(
    space_name: str, dataset: str, batch_size: int, seeds: list[int], feature: str | None = None
) -> Scorer:
    space = get_space(space_name)
    spec = space.dataset(f"{dataset}_kd")
    teacher = create_model(space.default_teacher, num_classes=spec.num_classes)
    # Until the Scorer resizes for the teacher itself, the teacher resizes its own input.
    teacher = ResizeInput(teacher, space.teacher_image_size)
    classifier, default_feature = space.feature_hooks
    return Scorer(
        teacher,
        teacher_init="random",  # the paper's random teacher, as these figures were made
        num_classes=spec.num_classes,
        batch_size=batch_size,
        seeds=seeds,
        image_size=spec.image_size,
        semantic="class",
        student_classifier=classifier,
        student_feature=feature or default_feature,
        builder=space.build,
        coster=lambda arch, k, size: space.cost(arch, k, size[-1]),
    )


def _run_dir(args: argparse.Namespace) -> Path:
    tag = f"-{args.feature}" if args.feature else ""
    return Path(args.out) / f"{args.space}-{args.dataset}-b{args.batch_size}{tag}"


def _load(path: Path) -> dict[tuple[str, int], dict]:
    recs: dict[tuple[str, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line of a killed run
            key = (r["arch"], r["seed"])
            old = recs.setdefault(key, {"values": {}, "seconds": {}})
            old["values"].update(r["values"])
            old["seconds"].update(r["seconds"])
    return recs


def score(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    space = get_space(args.space)
    archs = space.rank_archs()[: args.limit or None]
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    for p in proxies:
        get_proxy(p)
    run = _run_dir(args)
    run.mkdir(parents=True, exist_ok=True)
    cache = run / "scores.jsonl"
    recs = _load(cache)
    scorer = _scorer(args.space, args.dataset, args.batch_size, args.seeds, args.feature)
    t0 = time.perf_counter()
    for s in args.seeds:
        scorer.teacher(s)
    print(f"teacher: {time.perf_counter() - t0:.1f} s for {len(args.seeds)} seed(s)", flush=True)
    done = 0
    with cache.open("a") as fh:
        for i, arch in enumerate(archs):
            for s in args.seeds:
                have = recs.get((arch, s), {"values": {}})["values"]
                need = [p for p in proxies if p not in have]
                if not need:
                    continue
                probe = scorer.probe(arch, s)
                values, secs = {}, {}
                for p in need:
                    w0, c0 = time.perf_counter(), time.process_time()
                    try:
                        v = float(get_proxy(p).fn(probe))
                    except (RuntimeError, ValueError, FloatingPointError, ZeroDivisionError):
                        v = math.nan
                    values[p] = v if math.isfinite(v) else None
                    secs[p] = [time.perf_counter() - w0, time.process_time() - c0]
                fh.write(json.dumps({"arch": arch, "seed": s, "values": values, "seconds": secs}))
                fh.write("\n")
                fh.flush()
                done += 1
                wall = sum(x[0] for x in secs.values())
                cpu = sum(x[1] for x in secs.values())
                print(
                    f"[{i + 1}/{len(archs)}] {arch} seed {s}: {wall:.1f} s wall, {cpu:.1f} s CPU",
                    flush=True,
                )
    print(
        f"scored {done} (arch, seed) pairs in {time.perf_counter() - t0:.1f} s; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


def _outliers(y: np.ndarray) -> int:
    """Tukey's rule: values more than 3 IQR outside the quartiles (far outliers)."""
    q1, q3 = np.percentile(y, [25, 75])
    iqr = q3 - q1
    return int(((y < q1 - 3 * iqr) | (y > q3 + 3 * iqr)).sum())


def _ties(v: np.ndarray) -> int:
    """Values that repeat an earlier one (n - distinct)."""
    return int(len(v) - len(np.unique(v)))


def report(args: argparse.Namespace) -> list[dict]:
    rows, secs = _rows(args)
    if args.markdown:
        _markdown(rows, secs)
    else:
        for r in rows:
            print(json.dumps(r))
    return rows


def _rows(args: argparse.Namespace) -> tuple[list[dict], list[float]]:
    """Correlation rows of one scored run, and the CPU seconds of each (student, seed)."""
    space = get_space(args.space)
    recs = _load(_run_dir(args) / "scores.jsonl")
    targets = [t for t in space.targets if t.startswith(args.dataset + "_")]
    proxies = sorted({p for r in recs.values() for p in r["values"]})
    rows = []
    for target in targets:
        for part in (None, *space.parts()):
            try:
                truth = space.ground_truth(target, part)
            except Exception:  # noqa: BLE001 - a part without this target
                continue
            if part is not None and len(truth) == len(space.ground_truth(target)):
                continue  # the only part holding this target: same as the whole set
            archs = [a for a in truth if all((a, s) in recs for s in args.seeds)]
            if len(archs) < len(truth):
                continue
            y = np.array([truth[a] for a in archs])
            for p in proxies:
                if not all(p in recs[(a, s)]["values"] for a in archs for s in args.seeds):
                    continue  # not scored for every student (yet)
                sign = get_proxy(p).sign
                per = [
                    np.array([_val(recs[(a, s)]["values"].get(p)) * sign for a in archs])
                    for s in args.seeds
                ]
                if any(np.isnan(x).all() for x in per):
                    continue
                pred = np.mean(per, axis=0)
                rows.append(
                    {
                        "space": args.space,
                        "target": target,
                        "part": part or "all",
                        "proxy": p,
                        "n": len(archs),
                        "kendall": rankstats.kendall(pred, y),
                        "kendall_per_seed": [rankstats.kendall(x, y) for x in per],
                        "spearman": rankstats.spearman(pred, y),
                        "acc_ties": _ties(y),
                        "acc_outliers": _outliers(y),
                        "proxy_ties": _ties(pred[np.isfinite(pred)]),
                        "nonfinite": int((~np.isfinite(pred)).sum()),
                    }
                )
    secs = [sum(x[1] for x in r["seconds"].values()) for r in recs.values()]
    return rows, secs


def _print_proxy_rows(
    by: dict, cols: list, proxies: list[str], *, digits: int, missing: str, name: str
) -> None:
    """One Markdown row per proxy: ``kendall / spearman`` in each column, ``missing`` if unscored."""
    for p in proxies:
        cells = []
        for c in cols:
            r = by.get((*c, p))
            cells.append(
                missing if r is None else f"{r['kendall']:.{digits}f} / {r['spearman']:.{digits}f}"
            )
        print(f"| {name.format(p)} | " + " | ".join(cells) + " |")


def table(args: argparse.Namespace) -> None:
    """One Markdown table over every scored dataset of a space: Kendall / Spearman per target."""
    rows = []
    for dataset in ("c100", "flowers", "chaoyang"):
        args.dataset = dataset
        rows += _rows(args)[0]
    by = {(r["target"], r["part"], r["proxy"]): r for r in rows}
    cols = []
    for kind in ("_kd", "_base"):
        for dataset in ("c100", "flowers", "chaoyang"):
            t = dataset + kind
            cols += sorted(
                {(r["target"], r["part"]) for r in rows if r["target"] == t},
                key=lambda c: (c[1] != "all", str(c[1])),
            )
    first = ("c100_kd", "all")
    proxies = sorted(
        sorted({r["proxy"] for r in rows}),  # by name first: ties print in a fixed order
        key=lambda p: -by.get((*first, p), {"kendall": -9})["kendall"],
    )
    head = [f"{t}" + ("" if p == "all" else f" (part {p})") for t, p in cols]
    print("| proxy | " + " | ".join(head) + " |")
    print("|---" * (len(cols) + 1) + "|")
    _print_proxy_rows(by, cols, proxies, digits=2, missing="", name="`{}`")
    for p in ("diswot", "mr", "ms"):
        if all(len(by.get((*c, p), {}).get("kendall_per_seed", [])) > 1 for c in cols):
            cells = [
                "{:.2f} ± {:.2f}".format(*rankstats.mean_std(by[(*c, p)]["kendall_per_seed"]))
                for c in cols
            ]
            print(f"| `{p}` Kendall per seed, mean ± std | " + " | ".join(cells) + " |")
    for p in ("params", "flops"):
        if all((*c, p) in by for c in cols):
            cells = [str(by[(*c, p)]["proxy_ties"]) for c in cols]
            print(f"| tied `{p}` values | " + " | ".join(cells) + " |")
    print(
        "| n (accuracy ties, far outliers) | "
        + " | ".join(
            "{n} ({acc_ties}, {acc_outliers})".format(**next(by[k] for k in by if k[:2] == c))
            for c in cols
        )
        + " |"
    )


def _val(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _markdown(rows: list[dict], secs: list[float]) -> None:
    by: dict[tuple, dict] = {}
    for r in rows:
        by[(r["target"], r["part"], r["proxy"])] = r
    # KD targets first, the whole set before its parts; proxies by Kendall on the first column
    cols = sorted(
        {(r["target"], r["part"]) for r in rows},
        key=lambda c: (not c[0].endswith("_kd"), c[0], c[1] != "all", str(c[1])),
    )
    proxies = sorted(
        sorted({r["proxy"] for r in rows}),  # by name first: ties print in a fixed order
        key=lambda p: -by.get((cols[0][0], cols[0][1], p), {"kendall": -9})["kendall"],
    )
    print("| proxy | " + " | ".join(f"{t} ({p}) tau / rho" for t, p in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    _print_proxy_rows(by, cols, proxies, digits=3, missing="-", name="{}")
    print()
    for c in cols:
        r = next(by[k] for k in by if k[:2] == c)
        print(
            f"{c[0]} part {c[1]}: n={r['n']}, accuracy ties {r['acc_ties']}, "
            f"far outliers {r['acc_outliers']}"
        )
    for p in proxies:
        r = by.get((*cols[0], p))
        if r and r["proxy_ties"]:
            print(f"{p}: {r['proxy_ties']} tied scores among {r['n']}")
    if secs:
        print(
            f"\nCPU seconds per (student, seed), all proxies scored: median "
            f"{np.median(secs):.2f}, mean {np.mean(secs):.2f}"
        )


def baseline(args: argparse.Namespace) -> None:
    """Params/FLOPs against every target and part: pure ground truth + closed-form cost."""
    for name in ("pit", "autoformer"):
        space = get_space(name)
        for target in space.targets:
            k = space.dataset(target).num_classes
            for part in (None, *space.parts()):
                try:
                    truth = space.ground_truth(target, part)
                except Exception:  # noqa: BLE001
                    continue
                archs = list(truth)
                y = np.array([truth[a] for a in archs])
                cost = [space.cost(a, k, 224) for a in archs]
                p = np.array([c.params for c in cost], dtype=float)
                f = np.array([c.flops for c in cost], dtype=float)
                print(
                    f"{name:10s} {target:14s} part {part or 'all':3} n={len(archs):3d} "
                    f"params tau {rankstats.kendall(p, y):.3f} rho {rankstats.spearman(p, y):.3f} | "
                    f"flops tau {rankstats.kendall(f, y):.3f} rho {rankstats.spearman(f, y):.3f} | "
                    f"acc ties {_ties(y)} outliers {_outliers(y)} | param ties {_ties(p)}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("score", "report", "table"):
        p = sub.add_parser(name)
        p.add_argument("--space", choices=("pit", "autoformer"), required=True)
        if name != "table":
            p.add_argument("--dataset", choices=("c100", "flowers", "chaoyang"), default="c100")
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--seeds", type=int, nargs="+", default=[0])
        p.add_argument("--out", default="runs/vit-rank")
        p.add_argument(
            "--feature",
            default=None,
            help="student module whose output the relation term uses (default: the space's "
            "token_map; final_token = the classifier input) - an ablation",
        )
        if name == "score":
            p.add_argument("--proxies", default=",".join(FORWARD_ONLY))
            p.add_argument("--limit", type=int, default=0, help="score only the first N students")
            p.add_argument("--threads", type=int, default=2)
        elif name == "report":
            p.add_argument("--markdown", action="store_true")
    sub.add_parser("baseline")
    args = ap.parse_args()
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    {"score": score, "report": report, "table": table, "baseline": baseline}[args.cmd](args)


if __name__ == "__main__":
    main()
