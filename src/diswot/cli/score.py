"""``diswot score``: the DisWOT score of one student for one teacher."""

from __future__ import annotations

import argparse

from diswot.cli._common import add_probe_args, print_json
from diswot.models.nb201 import is_arch_string
from diswot.probe import Scorer
from diswot.proxies import resolve_proxies
from diswot.runtime import torch_threads
from diswot.spaces import get_space


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score",
        help="score one student for a teacher without training",
        description="Score one student (S1 code like 713, ResNet name, or NB201 arch string).",
    )
    p.add_argument(
        "--student",
        required=True,
        help="S1 code (713), resnet20, NB201 arch string, or a search's result.json (its winner)",
    )
    p.add_argument("--num-classes", type=int, default=100, help="classes (default 100)")
    p.add_argument("--image-size", type=int, default=32, help="probe resolution (default 32)")
    p.add_argument(
        "--proxy",
        default="diswot",
        help="comma list of proxies to report beside the DisWOT components (default diswot)",
    )
    add_probe_args(p, teacher_default="resnet110")
    return p


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from diswot.distill.trainer import resolve_arch  # the same --student forms as distill

    student = resolve_arch(args.student)
    # An NB201 cell can be scored from the space's supernet (--engine auto/supernet).
    supernet = get_space("nb201").supernet if is_arch_string(student) else None
    scorer = Scorer(
        args.teacher,
        num_classes=args.num_classes,
        batch_size=args.batch_size,
        seeds=range(args.seeds),
        init=args.init,
        data=args.data,
        data_root=args.data_root,
        image_size=args.image_size,
        device=args.device,
        precision=args.precision,
        engine=args.engine,
        supernet=supernet,
    )
    names = resolve_proxies(args.proxy)
    proxies = list(dict.fromkeys(["diswot", "ms", "mr", *names]))
    res = scorer.score(student, proxies)
    convention = "nb201" if is_arch_string(student) else "macs"
    conv_text = (
        "NB201/NASLib convention: conv/linear multiply-adds + BN/ReLU/pool terms"
        if convention == "nb201"
        else "multiply-adds of conv/linear layers"
    )
    comps = {"ms": res.values["ms"], "mr": res.values["mr"]}
    if args.json:
        print_json(
            {
                "student": student,
                "teacher": args.teacher,
                "score": res.values["diswot"],
                "components": comps,
                "std": res.std,
                "proxies": {k: v for k, v in res.values.items() if k not in ("ms", "mr")},
                "semantic_form": res.info.get("semantic_form"),
                "params": res.params,
                "flops": res.flops,
                "flop_convention": convention,
                "seeds": list(scorer.seeds),
                "precision": args.precision,
                "engine": scorer.engine,
                "seconds": round(res.seconds, 4),
            }
        )
        return 0
    n_seeds = len(scorer.seeds)
    sd = f" ± {res.std['diswot']:.6f} (std over {n_seeds} seeds)" if n_seeds > 1 else ""
    print(
        f"student {student}  teacher {args.teacher}  batch {args.batch_size}  init {args.init}"
        + (f"  precision {args.precision}" if args.precision != "fp32" else "")
    )
    print(f"  M_s (semantic, {res.info.get('semantic_form', '?')} form): {comps['ms']:.6f}")
    print(f"  M_r (relation):                    {comps['mr']:.6f}")
    print(f"  DisWOT score -(M_s+M_r):           {res.values['diswot']:.6f}{sd}")
    for k, v in res.values.items():
        if k not in ("diswot", "ms", "mr"):
            print(f"  {k}: {v:.6g}")
    print(f"  params {res.params:,}  FLOPs {res.flops / 1e6:.2f} M, {conv_text}")
    return 0
