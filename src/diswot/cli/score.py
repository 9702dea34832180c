"""``diswot score``: the DisWOT score of one student for one teacher.

``--student`` may be a search's ``result.json``: its winner is then scored under the settings the
search recorded (teacher, probe batch, seeds, init, data, class count and image size of its target,
precision, engine, objective), so the score reproduces the search's; options given on the command
line win. A resnet-imagenet, pit or autoformer architecture given by itself is built by its space and
scored at that space's default teacher, class count and resolution unless options say otherwise.

``--teacher-ckpt`` scores against a trained teacher (``--teacher-init keep``, its default), read by
:func:`~diswot.scoring.teacher.load_teacher_checkpoint`; a search that scored with one hands it on
through its ``result.json`` unless a teacher is named here.

A composite proxy (``--proxy az_nas``, :mod:`diswot.proxies.composite`) ranks its terms against a
reference sample of the student's search space: ``--space``, else the space of a ``result.json`` or
of a space's own architecture. ``--proxy default`` names the default rule; the JSON says what it
resolved to.
"""

from __future__ import annotations

import argparse
from typing import Any

from diswot.cli._common import PROBE_DEFAULTS, add_probe_args, options_text, print_json
from diswot.config import ProbeConfig
from diswot.data import check_root_is_read
from diswot.distill.students import resolve_student
from diswot.errors import DiswotError
from diswot.models import is_model_name
from diswot.models.nb201 import is_arch_string
from diswot.proxies import PROXIES, get_proxy, resolve_proxies
from diswot.runfolder import stored_setting
from diswot.runtime import torch_threads
from diswot.scoring import Scorer
from diswot.scoring.teacher import (
    TeacherCheckpoint,
    load_teacher_checkpoint,
    resolve_teacher_init,
)
from diswot.spaces import get_space

#: Option dest -> the search setting (``settings.json``) it defaults to for a ``result.json``
#: student. ``device`` is not among them: where to score is this machine's choice.
FROM_SEARCH: dict[str, str] = {
    "teacher": "teacher",
    "batch_size": "batch_size",
    "seeds": "probe_seeds",
    "init": "init",
    "data": "data",
    "data_root": "data_root",
    "num_classes": "num_classes",
    "image_size": "image_size",
    "precision": "precision",
    "engine": "engine",
    "proxy": "objective",
}

#: What each option is when neither the user nor a search's settings set it.
DEFAULTS: dict[str, Any] = {
    "teacher": "resnet110",
    "num_classes": 100,
    "image_size": 32,
    "proxy": "default",
    **PROBE_DEFAULTS,
}

#: How the header names an option (seeds, classes and pixels are written by :func:`_shown`).
_LABELS = {
    "teacher": "teacher",
    "batch_size": "batch",
    "init": "init",
    "data": "data",
    "data_root": "data root",
    "precision": "precision",
    "engine": "engine",
    "proxy": "objective",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score",
        help="score one student for a teacher without training",
        description="Score one student (S1 code like 713, ResNet name, NB201 arch string, a "
        "resnet-imagenet/pit/autoformer architecture, or a search's result.json). A result.json's "
        "winner is scored under the search's recorded settings (teacher, batch size, seeds, init, "
        "data, classes, image size, precision, engine, objective), which reproduces its score; "
        "options given here override them.",
    )
    p.add_argument(
        "--student",
        required=True,
        help="S1 code (713), resnet20, NB201 arch string, a resnet-imagenet/pit/autoformer "
        "architecture, or a search's result.json (its winner, under the search's settings)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes (default 100; a result.json: its search's; a pit/autoformer/resnet-imagenet "
        "architecture: its space's)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="probe resolution (default 32; a result.json: its search's; a "
        "pit/autoformer/resnet-imagenet architecture: its space's, 224)",
    )
    p.add_argument(
        "--proxy",
        default=None,
        help="comma list of proxies to report beside the DisWOT components (default: the default rule; a "
        "result.json: its search's objective; 'default': the default rule)",
    )
    p.add_argument(
        "--space",
        default=None,
        help="the student's search space, whose reference sample composite proxies such as "
        "az_nas rank their terms against (default: a result.json's or a space architecture's)",
    )
    add_probe_args(
        p,
        teacher_default="resnet110",
        teacher_help=" (a result.json: its search's; a pit/autoformer/resnet-imagenet "
        "architecture: its space's)",
        unset=True,
    )
    return p


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _run(args)


def resolve_options(
    args: argparse.Namespace, student: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """The options to score with and where each came from: ``given`` (on the command line),
    ``search`` (a result.json's recorded settings), ``space`` (a space's defaults, for a space's
    architecture given by itself) or ``default`` (this command's)."""
    stored = student.settings or {}
    space_defaults: dict[str, Any] = {}
    if student.builder_space is not None and not stored:
        sp = get_space(student.builder_space)
        spec = sp.dataset(None)
        space_defaults = {
            "teacher": sp.default_teacher,
            "num_classes": spec.num_classes,
            "image_size": spec.image_size,
        }
    opts: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, default in DEFAULTS.items():
        given = getattr(args, key, None)
        recorded = (
            stored_setting(stored, FROM_SEARCH[key]) if stored and key in FROM_SEARCH else None
        )
        if key == "proxy" and recorded is not None and recorded not in PROXIES:
            recorded = None  # a custom objective of the Python API: nothing to report here
        if given is not None:
            opts[key], origin[key] = given, "given"
        elif recorded is not None:
            opts[key], origin[key] = recorded, "search"
        elif key in space_defaults:
            opts[key], origin[key] = space_defaults[key], "space"
        else:
            opts[key], origin[key] = default, "default"
    # The recorded engine is the search's resolved one; the supernet reproduces the gaussian init
    # only, so with another init given here the engine goes back to auto (same scores either way).
    if origin["engine"] == "search" and opts["engine"] == "supernet" and opts["init"] != "gaussian":
        opts["engine"], origin["engine"] = "auto", "default"
    if origin["teacher"] == "search" and not is_model_name(str(opts["teacher"])):
        raise DiswotError(
            f"the search in {student.source} had teacher {opts['teacher']!r}, which is not a model "
            "name (a module given to the Python API); pass --teacher NAME"
        )
    return opts, origin


def _seeds(value: Any) -> list[int]:
    """``--seeds N`` means seeds 0..N-1; a search records the list itself."""
    if isinstance(value, (list, tuple)):
        return [int(s) for s in value]
    return list(range(int(value)))


def _shown(key: str, value: Any) -> str:
    if key == "seeds":
        return f"seeds {','.join(map(str, _seeds(value)))}"
    if key == "num_classes":
        return f"{value} classes"
    if key == "image_size":
        return f"{value} px"
    return f"{_LABELS[key]} {value}"


def _provenance(student: Any, opts: dict[str, Any], origin: dict[str, str]) -> list[str]:
    """Header lines saying where the settings came from (none for a plainly named student)."""
    given = options_text({k: opts[k] for k in FROM_SEARCH if origin[k] == "given"})
    tail = f"; given here: {given}" if given else ""
    lines = []
    if student.source is not None:
        where = f"the search in {student.source}"
        what = ", ".join(
            x
            for x in (
                student.space and f"space {student.space}",
                student.settings
                and student.settings.get("target")
                and f"target {student.settings['target']}",
            )
            if x
        )
        where += f" ({what})" if what else ""
        if not student.settings:
            lines.append(f"  settings: this command's defaults; {where} records no settings{tail}")
        else:
            taken = [
                _shown(k, opts[k])
                for k in FROM_SEARCH
                if origin[k] == "search" and not (k == "data_root" and opts[k] is None)
            ]
            lines.append(f"  settings of {where}: {', '.join(taken) or 'none'}{tail}")
        w = student.winner or {}
        if isinstance(w.get("score"), (int, float)):
            objective = (student.settings or {}).get("objective", "its objective")
            lines.append(
                f"  the search scored it {w['score']:.6f} ({objective}, under its settings)"
            )
    elif any(o == "space" for o in origin.values()):
        taken = [_shown(k, opts[k]) for k in FROM_SEARCH if origin[k] == "space"]
        lines.append(
            f"  settings: the {student.builder_space} space's defaults: {', '.join(taken)}{tail}"
        )
    return lines


def _teacher(
    args: argparse.Namespace,
    st: Any,
    opts: dict[str, Any],
    origin: dict[str, str],
    num_classes: int,
) -> tuple[Any, TeacherCheckpoint | None]:
    """The teacher to score against: its name, or the trained network of ``--teacher-ckpt`` (or
    of the checkpoint a result.json's search scored with, unless a teacher is given here) with
    what it was read from. ``opts["teacher"]`` becomes the checkpoint's architecture."""
    path = args.teacher_ckpt
    recorded = (st.settings or {}).get("teacher_ckpt")
    if path is None and recorded and args.teacher is None and args.teacher_init != "random":
        path = recorded
    resolve_teacher_init(opts["teacher"], args.teacher_init, path)  # refusals before any load
    if path is None:
        return opts["teacher"], None
    # The architecture a plain state dict is loaded into (a diswot checkpoint names its own).
    named = origin["teacher"] == "given" or (origin["teacher"] == "search" and path == recorded)
    name = opts["teacher"] if named else None
    model, info = load_teacher_checkpoint(path, name, num_classes)
    want = (st.settings or {}).get("teacher_sha256")
    if path == recorded and want and info.sha256 != want:
        raise DiswotError(
            f"the search in {st.source} scored with teacher checkpoint {path} (sha256 "
            f"{want[:12]}), which has changed since (now {info.sha256[:12]}); pass --teacher-ckpt "
            "with the file it used"
        )
    opts["teacher"] = info.arch
    return model, info


def _run(args: argparse.Namespace) -> int:
    st = resolve_student(args.student)  # the same --student forms as train and distill
    student = st.arch
    opts, origin = resolve_options(args, st)
    if origin["data_root"] == "given":
        check_root_is_read(str(opts["data"]), opts["data_root"])
    probe = ProbeConfig(
        num_classes=int(opts["num_classes"]),
        batch_size=int(opts["batch_size"]),
        seeds=tuple(_seeds(opts["seeds"])),
        init=opts["init"],
        data=opts["data"],
        data_root=opts["data_root"],
        image_size=int(opts["image_size"]),
        device=opts["device"],
        precision=opts["precision"],
        engine=opts["engine"],
    )
    teacher, trained = _teacher(args, st, opts, origin, probe.num_classes)
    if args.space:
        get_space(args.space)  # first: a --space file may register the proxies named
    names = resolve_proxies(str(opts["proxy"]))
    composites = [n for n in names if get_proxy(n).needs_space]
    space_name = args.space or st.builder_space or (st.space if composites else None)
    space = get_space(space_name) if space_name is not None else None
    if space is not None:
        # Built, hooked and costed as its search did (a ViT: class-form semantic term, the
        # teacher at its own resolution, the final patch tokens as the relation feature).
        scorer = Scorer(teacher, probe, space=space, teacher_init=args.teacher_init)
        convention = space.flop_convention
        conv_text = space.cost_convention(probe.num_classes, probe.image_size)
    elif is_arch_string(student):
        # An NB201 cell: scored from the space's supernet (--engine auto/supernet), and costed as
        # the NB201 search counts it (its budget's convention), so the FLOPs printed here are the
        # ones a search printed for the same cell.
        nb201 = get_space("nb201")
        scorer = Scorer(
            teacher,
            probe,
            supernet=nb201.supernet,
            coster=lambda arch, k, size: nb201.cost(arch, k, size[-1]),
            teacher_init=args.teacher_init,
        )
        convention = nb201.flop_convention
        conv_text = nb201.cost_convention(probe.num_classes, probe.image_size)
    else:
        scorer = Scorer(teacher, probe, teacher_init=args.teacher_init)
        convention = "macs"
        conv_text = "multiply-adds of conv/linear layers"
    proxies = list(dict.fromkeys(["diswot", "ms", "mr", *names]))
    res = scorer.score(student, proxies)
    references = {n: scorer.reference(n).settings() for n in composites}
    comps = {"ms": res.values["ms"], "mr": res.values["mr"]}
    # The objective: the first proxy asked for (the default rule's unless --proxy says otherwise),
    # oriented larger-is-better as a search records its candidates' scores.
    main = names[0] if names else "diswot"
    main_score = res.values[main] * get_proxy(main).sign
    winner = st.winner or {}
    if args.json:
        print_json(
            {
                "student": student,
                "teacher": opts["teacher"],
                "score": main_score,
                "objective": main,
                # As a search records its candidates: the objective's components (DisWOT's M_s
                # and M_r), every other value under "proxies".
                "components": comps if main == "diswot" else {},
                "std": res.std,
                "proxies": {
                    k: v for k, v in res.values.items() if main != "diswot" or k not in comps
                },
                "proxy": opts["proxy"],
                "resolved": ",".join(names),
                "references": references or None,
                # What it was scored under and where that came from (see --help).
                "batch_size": probe.batch_size,
                "init": probe.init,
                "data": probe.data,
                "num_classes": probe.num_classes,
                "image_size": probe.image_size,
                "space": st.space,
                "settings_from": None if st.source is None else str(st.source),
                "settings_origin": {k: origin[k] for k in FROM_SEARCH},
                "search_score": winner.get("score"),
                "search_objective": (st.settings or {}).get("objective"),
                "semantic_form": res.info.get("semantic_form"),
                "params": res.params,
                "flops": res.flops,
                "flop_convention": convention,
                "seeds": list(scorer.seeds),
                "precision": opts["precision"],
                "engine": scorer.engine,
                "seconds": round(res.seconds, 4),
                "teacher_ckpt": trained.path if trained else None,
                "teacher_sha256": trained.sha256 if trained else None,
                "teacher_init": scorer.teacher_init,
            }
        )
        return 0
    n_seeds = len(scorer.seeds)
    sd = f" ± {res.std['diswot']:.6f} (std over {n_seeds} seeds)" if n_seeds > 1 else ""
    print(
        f"student {student}  teacher {opts['teacher']}  batch {probe.batch_size}  init "
        f"{probe.init}"
        + (f"  precision {opts['precision']}" if opts["precision"] != "fp32" else "")
    )
    for line in _provenance(st, opts, origin):
        print(line)
    if trained is not None:
        print(f"  teacher weights: {trained.path} (sha256 {trained.sha256[:12]}), kept")
    rows = [
        (f"M_s (semantic, {res.info.get('semantic_form', '?')} form):", f"{comps['ms']:.6f}"),
        ("M_r (relation):", f"{comps['mr']:.6f}"),
        ("DisWOT score -(M_s+M_r):", f"{res.values['diswot']:.6f}{sd}"),
    ]
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"  {label.ljust(width)}{value}")
    for k, v in res.values.items():
        if k not in ("diswot", "ms", "mr"):
            what = " (the objective)" if k == main else ""
            print(f"  {k}{what}: {v:.6g}")
    for n, ref in references.items():
        print(
            f"  {n} reference: {ref['size']} {space_name} architectures drawn with seed "
            f"{ref['seed']} ({ref['hash']})"
        )
    print(f"  params {res.params:,}  FLOPs {res.flops / 1e6:.2f} M, {conv_text}")
    return 0
