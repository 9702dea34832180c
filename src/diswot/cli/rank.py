"""``diswot rank``: score a space's students with proxies and correlate them with shipped ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from diswot.cli._common import add_backend_args, add_probe_args, print_json
from diswot.config import defaults
from diswot.data import check_root_is_read
from diswot.proxies.composite import resolve_aliases
from diswot.rank import RankConfig, RankResult, merge_runs, parse_shard, run_rank
from diswot.runtime import torch_threads

#: The flags' defaults come from the settings' one description (:class:`RankConfig`).
_D = defaults(RankConfig)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "rank",
        help="rank a space's students with proxies; Kendall/Spearman/... against ground truth",
        description="Score the students of a space (S1: all 64; NB201: a seeded sample or --archs "
        "FILE) with zero-cost proxies and correlate each with the shipped ground-truth accuracy. "
        "Writes table.md, scores.csv, correlations.json and scatter.png to the run folder, which "
        "caches every score: rerunning with more proxies or seeds computes only what is new.",
    )
    p.add_argument(
        "--space", default=_D["space"], help=f"search space: s1, nb201, ... (default {_D['space']})"
    )
    proxies = ",".join(_D["proxies"])
    p.add_argument(
        "--proxy",
        default=proxies,
        help="'all' or a comma list of proxies; 'a+b' adds a rank-average ensemble; 'default' "
        f"names the default rule (params and flops always; default {proxies})",
    )
    p.add_argument(
        "--target",
        default=None,
        help="ground truth: s1 kd/cls (both by default); nb201 cifar10/cifar100/ImageNet16-120 "
        "(default cifar100); pit/autoformer c100|flowers|chaoyang_kd|base (default c100_kd, plus "
        "c100_base where every ranked student has it); networks and teacher get the target's "
        "class count",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=None,
        help="seeded sample size (default: nb201 200 cells, other spaces all their students)",
    )
    p.add_argument(
        "--sample-seed",
        type=int,
        default=_D["sample_seed"],
        help=f"seed of the sample (default {_D['sample_seed']})",
    )
    p.add_argument(
        "--archs",
        default=None,
        metavar="FILE",
        help="score exactly the architectures in FILE, one per line (nb201: arch string or "
        "NASLib tuple such as (0, 2, 3, 2, 3, 1))",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="score only architectures I, I+N, I+2N, ... (0 <= I < N); join with --merge",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="join the run folders of --shard runs into --out and report the whole sample",
    )
    p.add_argument(
        "--out",
        default=None,
        help="run folder (default runs/rank-<space>[-<target>][-shardIofN]); resumable",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="score on N processes (local) or N Ray actors (ray; default: the cluster's CPUs, or "
        "GPUs / --gpus-per-task); same scores and cache as the serial default",
    )
    p.add_argument(
        "--group",
        type=int,
        default=None,
        help="architectures scored in one pass (the same scores to float tolerance; default: 1 "
        "on a CPU, from free memory on a GPU)",
    )
    add_backend_args(p)
    add_probe_args(
        p,
        teacher_default=None,
        teacher_help="; default the space's; 'none' ranks teacher-free proxies only",
    )
    p.set_defaults(seeds=1)
    return p


def _default_out(args: argparse.Namespace) -> Path:
    name = f"rank-{args.space}"
    if args.target:
        name += "-" + args.target.replace(",", "_")
    shard = parse_shard(args.shard)
    if shard:
        name += f"-shard{shard[0]}of{shard[1]}"
    return Path("runs") / name


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _default_out(args)
    with torch_threads(args.threads):
        res = merge_runs(args.merge, out) if args.merge else _rank(args, out)
    if args.json:
        print_json(
            {
                "space": res.space,
                "targets": res.targets,
                "n_archs": len(res.archs),
                "seeds": res.seeds,
                "proxy": args.proxy,
                "resolved": resolve_aliases(args.proxy),
                "out": str(out),
                "seconds": round(res.seconds, 2),
                "correlations": res.correlations,
            }
        )
        return 0
    print(res.table())
    print(
        f"\n{len(res.archs)} architectures x {len(res.seeds)} seed(s), {res.seconds:.1f} s; "
        f"results in {out}/ (table.md, scores.csv, correlations.json, scatter.png)"
    )
    return 0


def _rank(args: argparse.Namespace, out: Path) -> RankResult:
    check_root_is_read(args.data, args.data_root)
    return run_rank(
        args.space,
        teacher=args.teacher,
        teacher_ckpt=args.teacher_ckpt,
        teacher_init=args.teacher_init,
        proxies=resolve_aliases(args.proxy),
        seeds=args.seeds,
        batch_size=args.batch_size,
        target=args.target,
        sample=args.sample,
        sample_seed=args.sample_seed,
        archs=args.archs,
        shard=args.shard,
        out_dir=out,
        init=args.init,
        data=args.data,
        data_root=args.data_root,
        device=args.device,
        precision=args.precision,
        engine=args.engine,
        progress=not args.no_progress,
        workers=args.workers if args.workers is not None else (0 if args.backend == "ray" else 1),
        group=args.group,
        backend=args.backend,
        address=args.address,
        gpus_per_task=args.gpus_per_task,
    )
