"""``diswot search``: find the best student for a teacher within a size budget, without training.

Every option defaults to "unset" so that ``--resume DIR`` can take the run's own settings from
``DIR/settings.json`` and only options the user names explicitly are compared with them. With no
option that says *what* to search the command runs a built-in quick default (an NB201 search for a
ResNet56 teacher under 100M FLOPs) sized to finish within about a minute on two CPU cores; options
that only say how or where to run it (``--seed``, ``--out``, ``--device``, ``--workers``...) keep
it. Either way the settings in use are printed before the search starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from diswot.cli._common import add_backend_args, add_probe_args, options_text, print_json
from diswot.data import check_root_is_read
from diswot.errors import DiswotError
from diswot.runtime import torch_threads
from diswot.search.api import run_search
from diswot.search.config import (
    DEFAULT_CYCLES,
    DEFAULTS,
    default_algorithm,
    default_out_dir,
    read_settings,
)
from diswot.search.searchers import ALGORITHMS
from diswot.spaces import list_spaces

if TYPE_CHECKING:
    from diswot.search.pareto.config import ParetoConfig

#: ``diswot search`` with no arguments (the README's ``make run``): exactly ``--space nb201`` (its
#: ResNet56 teacher, CIFAR-100 target and aging evolution) plus these options, which the command
#: prints as a command line that gives the same search. Per scored candidate this costs one
#: batch-16 forward of a random NB201 cell (the teacher is scored once per seed).
QUICK_DEFAULT: dict[str, object] = {
    "space": "nb201",
    "max_flops": "100M",
    "cycles": 100,
    "population": 20,
    "sample_size": 5,
    "batch_size": 16,
}

#: Option dest -> fallback when neither the user nor a resumed run sets it: the search settings'
#: own defaults (``--proxy`` sets ``objective``; ``--seeds`` counts the default probe seeds).
_FALLBACK: dict[str, object] = {
    **{k: DEFAULTS[k] for k in ("space", "population", "sample_size", "crossover_prob", "seed")},
    **{k: DEFAULTS[k] for k in ("batch_size", "init", "data", "device", "precision")},
    "proxy": DEFAULTS["objective"],
    "seeds": len(DEFAULTS["probe_seeds"]),
}

#: The size-budget options (run-folder settings keep them under ``budget``).
_BOUNDS = ("max_params", "max_flops", "min_params", "min_flops")

#: Options that change only how or where the search runs, or its random stream: giving them keeps
#: the quick default (``diswot search --seed 1`` is the quick search with another seed).
_KEEP_QUICK = frozenset({"seed", "device", "precision", "out"})

_OPTIONS = (
    "space",
    "target",
    "teacher",
    "teacher_ckpt",
    "teacher_init",
    "algorithm",
    "cycles",
    "population",
    "sample_size",
    "crossover_prob",
    "seed",
    "max_params",
    "max_flops",
    "min_params",
    "min_flops",
    "proxy",
    "batch_size",
    "seeds",
    "init",
    "data",
    "data_root",
    "device",
    "precision",
    "out",
    "resume",
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "search",
        help="search a space for the best student within a params/FLOPs budget (no training)",
        description="Aging evolution, random or exhaustive search over a student space, scoring "
        "each candidate with the DisWOT score (or any proxy) against a randomly initialised "
        "teacher. Writes candidates.jsonl, result.json and progress.png to the run folder; "
        "--resume DIR continues a killed run exactly. With no arguments: a quick NB201 demo.",
    )
    p.add_argument("--space", help=f"search space: {', '.join(list_spaces())} (default nb201)")
    p.add_argument(
        "--target",
        help="dataset target fixing classes/resolution (nb201: cifar10, cifar100 (default), "
        "ImageNet16-120; s1: kd/cls, both 100 classes)",
    )
    p.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        help="default: exhaustive for small spaces (s1), evolution otherwise",
    )
    p.add_argument(
        "--cycles",
        type=int,
        help=f"scored candidates (default {DEFAULT_CYCLES}; exhaustive: all admissible)",
    )
    p.add_argument(
        "--population", type=int, help=f"evolution population (default {DEFAULTS['population']})"
    )
    p.add_argument(
        "--sample-size",
        type=int,
        help=f"evolution tournament size (default {DEFAULTS['sample_size']})",
    )
    p.add_argument(
        "--crossover-prob",
        type=float,
        help="chance a child is a crossover of two tournament winners (default 0: mutation only)",
    )
    p.add_argument("--seed", type=int, help="search RNG seed (default 0)")
    for bound in ("max", "min"):
        for what in ("params", "flops"):
            p.add_argument(
                f"--{bound}-{what}",
                metavar="N",
                help=f"{bound}imum {what} (inclusive), e.g. 278324, 100M, 40.82M, 1.5G",
            )
    p.add_argument(
        "--proxy",
        "--objective",
        dest="proxy",
        help="objective: a registered proxy name, 'diswot' for the paper's score, or 'default' "
        "(the default) for the default rule's proxy (docs/default_objective.md)",
    )
    p.add_argument("--out", help="run folder (default runs/search-<space>-<timestamp>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its settings")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="score candidates on N processes (local) or N Ray actors (ray; default: the "
        "cluster's CPUs, or GPUs / --gpus-per-task); asynchronous aging evolution with that many "
        "in flight (default 1: the serial search)",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="candidates scored at once (default --workers); results are taken in proposal "
        "order, so the same seed and --in-flight give the same search on any backend",
    )
    p.add_argument(
        "--group",
        type=int,
        default=None,
        help="candidates scored in one pass (the same scores; default: 1 on a CPU, from free "
        "memory on a GPU); --in-flight defaults to it",
    )
    add_backend_args(p)
    _add_pareto_args(p)
    add_probe_args(p, teacher_default=None)
    # Unset by default so a resumed run's settings fill them; _FALLBACK supplies the real defaults.
    p.set_defaults(batch_size=None, seeds=None, init=None, data=None, device=None, precision=None)
    return p


#: The Pareto search's options (dest -> ParetoConfig field; each is the field of the same name).
_PARETO = (
    "pareto",
    "max_latency_ms",
    "latency_batch",
    "latency_warmup",
    "latency_repeats",
    "storage",
    "study_name",
)


def _add_pareto_args(p: argparse.ArgumentParser) -> None:
    """``--pareto`` and the options that only a Pareto search takes (all unset unless given)."""
    from diswot.search.pareto.config import DEFAULTS as PD

    g = p.add_argument_group(
        "Pareto search",
        "maximise the score and minimise costs with Optuna's NSGA-II (pip install "
        "'diswot[pareto]'); writes pareto.json, pareto.csv and pareto.png, the winner being the "
        "best score within the budgets",
    )
    g.add_argument(
        "--pareto",
        metavar="COSTS",
        help="costs to minimise beside the score, comma-separated: params, flops, latency "
        "(e.g. --pareto params,latency)",
    )
    g.add_argument(
        "--max-latency-ms",
        type=float,
        metavar="MS",
        help="latency budget (inclusive), measured per candidate on --device at --latency-batch",
    )
    g.add_argument(
        "--latency-batch",
        type=int,
        metavar="N",
        help=f"batch size latency is measured at (default {PD['latency_batch']})",
    )
    g.add_argument(
        "--latency-warmup",
        type=int,
        metavar="N",
        help=f"untimed runs before timing (default {PD['latency_warmup']})",
    )
    g.add_argument(
        "--latency-repeats",
        type=int,
        metavar="N",
        help=f"timed runs whose median is the latency (default {PD['latency_repeats']})",
    )
    g.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna RDB storage, e.g. sqlite:///study.db: the study resumes from it, several "
        "machines can share it, optuna-dashboard shows it (default: in memory)",
    )
    g.add_argument(
        "--study-name",
        metavar="NAME",
        help="the study's name in --storage (default diswot-<run folder name>); runs on several "
        "machines that give the same name search one study",
    )


def _pareto_config(args: argparse.Namespace) -> ParetoConfig | None:
    """The Pareto settings: explicit options over a resumed run's; ``None`` for other searches."""
    from diswot.config import build
    from diswot.search.pareto.config import KEY, ParetoConfig

    given = {k: getattr(args, k, None) for k in _PARETO}
    stored = dict(read_settings(args.resume).get(KEY) or {}) if args.resume else {}
    if stored:
        stored["pareto"] = stored.pop("costs", None)
    values = {k: v for k, v in stored.items() if k in _PARETO and v is not None}
    values.update({k: v for k, v in given.items() if v is not None})
    if "pareto" not in values:
        extra = [k for k in _PARETO if given[k] is not None]
        if extra:
            raise DiswotError(
                f"--{extra[0].replace('_', '-')} belongs to the Pareto search; add --pareto COSTS"
            )
        return None
    values["costs"] = values.pop("pareto")
    return build(ParetoConfig, **values)


def _pareto_line(c: ParetoConfig, opts: dict[str, object]) -> str:
    """What the Pareto search trades off and how latency is measured, before it starts."""
    from diswot.proxies.composite import resolve_aliases
    from diswot.search.pareto.front import parse_costs

    line = (
        f"Pareto search with Optuna's NSGA-II (population {opts['population']}): maximise "
        f"{resolve_aliases(str(opts['proxy']))}, minimise {', '.join(parse_costs(c.costs))}"
    )
    if c.measures_latency:
        line += (
            f"; latency = median of {c.latency_repeats} runs after {c.latency_warmup} warm-up, "
            f"batch {c.latency_batch}, eval mode, fp32, on {opts['device']}"
        )
    if c.max_latency_ms is not None:
        line += f", at most {c.max_latency_ms:g} ms"
    return line


def _from_settings(s: dict) -> dict[str, object]:
    """Run-folder settings -> option values."""
    budget = s.get("budget") or {}
    return {
        "space": s.get("space"),
        "target": s.get("target"),
        "teacher": s.get("teacher"),
        "teacher_ckpt": s.get("teacher_ckpt"),
        "teacher_init": s.get("teacher_init"),
        "algorithm": s.get("algorithm"),
        "cycles": s.get("cycles"),
        "population": s.get("population"),
        "sample_size": s.get("sample_size"),
        "crossover_prob": s.get("crossover_prob"),
        "seed": s.get("seed"),
        "proxy": s.get("objective"),
        "batch_size": s.get("batch_size"),
        "seeds": s.get("probe_seeds"),
        "init": s.get("init"),
        "data": s.get("data"),
        "data_root": s.get("data_root"),
        "device": s.get("device"),
        "precision": s.get("precision"),
        **{k: budget.get(k) for k in _BOUNDS},
    }


def resolve_options(args: argparse.Namespace) -> tuple[dict[str, object], bool]:
    """Merge explicit options, a resumed run's settings, the quick default and fallbacks."""
    given = {k: getattr(args, k, None) for k in _OPTIONS}
    explicit = {k: v for k, v in given.items() if v is not None}
    quick = not (explicit.keys() - _KEEP_QUICK)
    opts: dict[str, object] = dict(_FALLBACK)
    if quick:
        opts.update(QUICK_DEFAULT)
    if args.resume:
        stored = {k: v for k, v in _from_settings(read_settings(args.resume)).items()}
        if explicit.get("space") not in (None, stored.get("space")):
            # Checked here: the other settings (the target, say) are the old space's and would
            # fail first with an error about them instead of this one.
            raise DiswotError(
                f"{args.resume} holds a search on space {stored.get('space')!r} (now "
                f"{explicit['space']!r}); resume with the same settings or use another --out"
            )
        opts.update({k: v for k, v in stored.items() if v is not None})
        # Budget bounds the old run did not set stay unset (not the fallbacks).
        for k in (*_BOUNDS, "cycles", "target"):
            opts[k] = stored.get(k)
    opts.update(explicit)
    return opts, quick


def _describe(opts: dict[str, object]) -> str:
    """The settings a search runs with, as options, the space's defaults filled in."""
    from diswot.spaces import get_space

    space = get_space(str(opts["space"]))
    algorithm = opts.get("algorithm") or default_algorithm(space)
    shown = {
        "space": space.name,
        # A checkpoint names its own architecture: no default teacher is shown beside it.
        "teacher": opts.get("teacher")
        or (None if opts.get("teacher_ckpt") else space.default_teacher),
        "teacher_ckpt": opts.get("teacher_ckpt"),
        "teacher_init": opts.get("teacher_init"),
        "target": opts.get("target") or space.default_target,
        "algorithm": algorithm,
        "cycles": opts.get("cycles") or (None if algorithm == "exhaustive" else DEFAULT_CYCLES),
    }
    if algorithm == "evolution":
        shown.update(population=opts["population"], sample_size=opts["sample_size"])
    for key in (*_BOUNDS, "proxy", "batch_size", "seed"):
        shown[key] = opts.get(key)
    text = options_text(shown)
    notes = [] if opts.get("cycles") or algorithm != "exhaustive" else ["every admissible student"]
    if not any(opts.get(k) is not None for k in ("max_params", "max_flops")):
        notes.append("no size budget")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def quick_command(args: argparse.Namespace, opts: dict[str, object]) -> str:
    """The command line the quick default runs as: ``diswot search`` with :data:`QUICK_DEFAULT`
    and the options given that change the search's candidates (the seed, the scoring device and
    precision, workers in flight, a Pareto search's algorithm; ``--pareto`` itself is printed on
    a line of its own). Running it gives the same candidates and winner (tests/test_bad_inputs)."""
    shown = dict(QUICK_DEFAULT)
    if opts.get("algorithm") not in (None, "evolution"):  # nsga2 for --pareto
        shown["algorithm"] = opts["algorithm"]
    for key in ("seed", "device", "precision"):
        if getattr(args, key, None) is not None:
            shown[key] = getattr(args, key)
    for key in ("workers", "in_flight", "group"):
        if getattr(args, key, None) not in (None, 1):
            shown[key] = getattr(args, key)
    if getattr(args, "backend", "local") != "local":
        shown["backend"] = args.backend
    return f"diswot search {options_text(shown)}"


def run(args: argparse.Namespace) -> int:
    opts, quick = resolve_options(args)
    pareto = _pareto_config(args)
    if pareto is not None:
        # NSGA-II is the Pareto search's algorithm; another one named explicitly is refused there.
        opts["algorithm"] = args.algorithm or "nsga2"
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise DiswotError("--out and --resume name different folders; give only --resume DIR")
    out = Path(str(args.resume or opts.get("out") or default_out_dir(str(opts["space"]))))

    check_root_is_read(str(opts["data"]), opts.get("data_root"))  # type: ignore[arg-type]

    def announce(folder: Path) -> None:  # called once the run is checked, before it writes
        args.folder = folder  # what an interrupted run's message tells to --resume
        if quick and not args.resume:
            print(
                "diswot search: no option says what to search, running the quick default, the "
                f"same search as: {quick_command(args, opts)}",
                file=sys.stderr,
            )
        elif not args.resume:
            print(f"diswot search: {_describe(opts)}", file=sys.stderr)
        if pareto is not None and not args.resume:
            print(f"diswot search: {_pareto_line(pareto, opts)}", file=sys.stderr)
        print(
            f"diswot search: {'resuming' if args.resume else 'writing'} {folder}/", file=sys.stderr
        )

    with torch_threads(args.threads):  # applied only: it does not change results, so not stored
        result = run_search(
            str(opts["space"]),
            teacher=opts.get("teacher"),  # type: ignore[arg-type]
            teacher_ckpt=opts.get("teacher_ckpt"),  # type: ignore[arg-type]
            teacher_init=opts.get("teacher_init"),  # type: ignore[arg-type]
            target=opts.get("target"),  # type: ignore[arg-type]
            algorithm=opts.get("algorithm"),  # type: ignore[arg-type]
            cycles=opts.get("cycles"),  # type: ignore[arg-type]
            population=int(opts["population"]),  # type: ignore[arg-type]
            sample_size=int(opts["sample_size"]),  # type: ignore[arg-type]
            crossover_prob=float(opts["crossover_prob"]),  # type: ignore[arg-type]
            seed=int(opts["seed"]),  # type: ignore[arg-type]
            max_params=opts.get("max_params"),  # type: ignore[arg-type]
            max_flops=opts.get("max_flops"),  # type: ignore[arg-type]
            min_params=opts.get("min_params"),  # type: ignore[arg-type]
            min_flops=opts.get("min_flops"),  # type: ignore[arg-type]
            proxy=str(opts["proxy"]),
            probe_seeds=opts["seeds"],  # type: ignore[arg-type]
            batch_size=int(opts["batch_size"]),  # type: ignore[arg-type]
            init=str(opts["init"]),
            data=str(opts["data"]),
            data_root=opts.get("data_root"),  # type: ignore[arg-type]
            device=str(opts["device"]),
            out_dir=out,
            resume=bool(args.resume),
            progress=not args.no_progress,
            workers=args.workers
            if args.workers is not None
            else (0 if args.backend == "ray" else 1),
            backend=args.backend,
            address=args.address,
            gpus_per_task=args.gpus_per_task,
            in_flight=args.in_flight,
            group=args.group,
            precision=str(opts["precision"]),
            engine=args.engine,  # not a run setting (same scores), so not taken from a resume
            on_start=announce,
            pareto=pareto,
        )
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.summary())
    return 0
