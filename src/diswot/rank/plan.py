"""What a rank run will do, resolved from the request before any work: the space, the sample (or an
``--archs`` file), the targets and their ground truth, the proxies and ensembles, the shard.

Everything a user can get wrong fails here, in one line, before the run folder is written.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from diswot.config import build, to_settings
from diswot.errors import DiswotError
from diswot.proxies import ensemble_members, resolve_proxies
from diswot.rank.config import RankConfig
from diswot.scoring import check_precision, resolve_engine
from diswot.spaces import SearchSpace, get_space

#: Proxies always reported beside the requested ones: the trivial baselines.
BASELINES = ("params", "flops")


def parse_proxies(
    spec: str | Sequence[str], *, has_teacher: bool, space: SearchSpace | None = None
) -> tuple[list[str], dict]:
    """``"all"``, ``"a,b,c+d"`` or a list -> (proxies to score, ensembles ``{name: members}``).

    ``all`` may be combined with others (``all,diswot+params``). Members of an ensemble are scored
    too; the baselines ``params`` and ``flops`` are always added. For a ``space`` without BatchNorm,
    ``all`` skips the proxies built on BN statistics (with a note) and naming one is an error.
    """
    bn = {
        "has_batchnorm": getattr(space, "has_batchnorm", True),
        "space": space.name if space else "",
    }
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [i.strip().lower() for i in items if i.strip()]
    if not items:
        raise DiswotError("no proxy given; use --proxy all or a comma list of proxy names")
    plain: list[str] = []
    ensembles: dict[str, list[str]] = {}
    for item in items:
        members = ensemble_members(item)
        if members is None:
            plain.extend(resolve_proxies(item, has_teacher=has_teacher, **bn))
        else:
            resolve_proxies(members, has_teacher=has_teacher, **bn)
            ensembles["+".join(members)] = members
            plain.extend(members)
    plain.extend(BASELINES)
    return list(dict.fromkeys(plain)), ensembles


def _refuse_repeats(archs: Sequence[str], where: Sequence[str], prefix: str = "") -> None:
    """Refuse an architecture listed twice (it would count twice in every correlation);
    ``where[i]`` names entry ``i`` in the error (``line 3``, ``archs[2]``)."""
    seen: dict[str, str] = {}
    for arch, here in zip(archs, where):
        if arch in seen:
            raise DiswotError(
                f"{prefix}{here} repeats the architecture of {seen[arch]} ({arch}); list each once"
            )
        seen[arch] = here


def read_archs_file(path: str | Path, space: SearchSpace) -> list[str]:
    """Architectures listed one per line (``#`` comments and blank lines skipped), canonicalised.

    For NB201 a line may also be a NASLib tuple such as ``(0, 2, 3, 2, 3, 1)``, so cell lists from
    NASLib-based tools can be scored as they are.
    """
    p = Path(path)
    if p.is_dir():
        raise DiswotError(
            f"--archs {p} is a folder; give a text file with one architecture per line"
        )
    if not p.is_file():
        raise DiswotError(f"--archs file {p} not found; give a file with one architecture per line")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM some editors write is not an arch
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise DiswotError(
            f"--archs file {p} is not UTF-8 text (line {line}, byte 0x{exc.object[exc.start]:02x}); "
            "give a plain-text file with one architecture per line"
        ) from None
    archs: list[str] = []
    lines: list[str] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("(") and space.name == "nb201":
            from diswot.models.nb201 import naslib_to_arch

            line = naslib_to_arch(line)
        try:
            arch = space.validate(line)
        except DiswotError as exc:
            raise DiswotError(f"{p} line {i}: {exc}") from None
        archs.append(arch)
        lines.append(f"line {i}")
    _refuse_repeats(archs, lines, f"{p} ")
    if not archs:
        raise DiswotError(f"--archs file {p} lists no architectures; give one per line")
    return archs


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (``0 <= i < n``) -> ``(i, n)``; ``None`` passes through."""
    if text is None or isinstance(text, tuple):
        shard = text
    else:
        try:
            i, n = (int(x) for x in str(text).split("/"))
            shard = (i, n)
        except ValueError:
            raise DiswotError(f"--shard must look like i/N, e.g. 0/4; got {text!r}") from None
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise DiswotError(f"--shard i/N needs 0 <= i < N, got {shard[0]}/{shard[1]}")
    return shard


def _targets(space: SearchSpace, target: str | Sequence[str] | None) -> list[str]:
    """Requested targets (default: every target sharing the default target's dataset)."""
    if not space.targets:
        raise DiswotError(f"space '{space.name}' ships no ground truth to rank against")
    if target is None:
        spec = space.dataset(None)
        return [t for t in space.targets if space.dataset(t) == spec]
    names = target.split(",") if isinstance(target, str) else list(target)
    names = [n.strip() for n in names if n.strip()]
    known = {t.lower(): t for t in space.targets}
    out = []
    for n in names:
        if n.lower() not in known and not (space.name == "s1" and n.lower() == "vanilla"):
            raise DiswotError(
                f"space '{space.name}' has no target '{n}'; known: {', '.join(space.targets)}"
            )
        out.append(known.get(n.lower(), n))
    specs = {space.dataset(t) for t in out}
    if len(specs) > 1:
        raise DiswotError(
            f"targets {', '.join(out)} need different class counts or resolutions; rank them in "
            "separate runs"
        )
    return list(dict.fromkeys(out))


@dataclasses.dataclass
class _Plan:
    """A resolved run: its recorded settings plus what only this process needs (the space
    instance, the full architecture list and the ground truth)."""

    space: SearchSpace
    config: RankConfig
    archs: list[str]  # full list (before sharding)
    targets: list[str]
    truth: dict[str, dict[str, float]]
    names: list[str]
    ensembles: dict[str, list[str]]
    seeds: list[int]
    shard: tuple[int, int] | None
    #: The ``sample`` asked for when it exceeded the space's architectures (all were taken).
    capped: int | None = None

    @property
    def settings(self) -> dict:
        """The ``settings`` object of ``settings.json``."""
        return to_settings(self.config)

    @property
    def my_archs(self) -> list[str]:
        if self.shard is None:
            return self.archs
        i, n = self.shard
        return self.archs[i::n]


def _teacher_name(sp: SearchSpace, teacher: str | None) -> str | None:
    """The teacher by name (``None``: the space's; ``"none"``: no teacher)."""
    if teacher is None:
        return sp.default_teacher or None
    if not isinstance(teacher, str):
        raise DiswotError(
            "run_rank takes a teacher name (its workers and resumed runs rebuild it by name); for "
            "a teacher module use Scorer.for_space(space, module) or run_search(teacher=module)"
        )
    return None if teacher.lower() == "none" else teacher


def _arch_list(
    sp: SearchSpace, archs: Sequence[str] | str | Path | None, sample: int | None, sample_seed: int
) -> list[str]:
    """The architectures asked for: a file, a list, or the space's seeded sample."""
    if isinstance(archs, (str, Path)):
        return read_archs_file(archs, sp)
    if archs is not None:
        arch_list = [sp.validate(a) for a in archs]
        _refuse_repeats(arch_list, [f"archs[{i}]" for i in range(len(arch_list))])
        return arch_list
    if sample is not None and sample < 1:
        raise DiswotError(f"--sample must be at least 1, got {sample}")
    return list(sp.rank_archs(sample, sample_seed))


def _fit_targets(
    sp: SearchSpace,
    target: str | Sequence[str] | None,
    targets: list[str],
    truth: dict[str, dict[str, float]],
    arch_list: list[str],
    explicit: bool,
) -> list[str]:
    """Match targets and architectures where some students lack a target's ground truth (edits
    ``targets`` and ``truth`` in place, returns the architectures), and refuse what cannot rank."""
    if target is None:  # default targets: leave out a companion target that some students lack
        first = sp.default_target if sp.default_target in targets else targets[0]
        for t in [t for t in targets if t != first]:
            lack = sum(a not in truth[t] for a in arch_list)
            if lack:
                targets.remove(t)
                del truth[t]
                print(
                    f"diswot: note: leaving out target {t}: {lack} of {len(arch_list)} "
                    f"architectures have none (rank it with --target {t})",
                    file=sys.stderr,
                )
    elif not explicit:  # named targets, default set: rank the students that have them all
        have = [a for a in arch_list if all(a in truth[t] for t in targets)]
        if 0 < len(have) < len(arch_list):
            print(
                f"diswot: note: ranking the {len(have)} of {len(arch_list)} architectures with "
                f"{', '.join(targets)} ground truth",
                file=sys.stderr,
            )
            arch_list = have
    if not arch_list:
        raise DiswotError("no architectures to rank; give a non-empty sample or --archs file")
    if len(arch_list) < 2:
        raise DiswotError("ranking needs at least 2 architectures")
    for t in targets:
        missing = [a for a in arch_list if a not in truth[t]]
        if missing:
            raise DiswotError(
                f"{len(missing)} architectures have no {t} ground truth in space '{sp.name}', "
                f"e.g. {missing[0]!r}; rank only architectures of the benchmark"
            )
    return arch_list


def _plan(
    space: str | SearchSpace,
    *,
    teacher: str | None,
    proxies: str | Sequence[str],
    seeds: int | Sequence[int],
    batch_size: int,
    target: str | Sequence[str] | None,
    sample: int | None,
    sample_seed: int,
    archs: Sequence[str] | str | Path | None,
    init: str,
    data: str,
    device: str,
    shard: tuple[int, int] | str | None,
    precision: str = "fp32",
    engine: str = "auto",
    data_root: str | None = None,
) -> _Plan:
    """Resolve a request into a :class:`_Plan`; every bad input is a one-line error here."""
    sp = get_space(space)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise DiswotError("--seeds must be at least 1")
    if len(set(seed_list)) != len(seed_list):
        raise DiswotError("seeds must be distinct")
    check_precision(precision)  # before any work, also when only workers build a Scorer
    engine = resolve_engine(engine, getattr(sp, "supernet", None), init)
    teacher = _teacher_name(sp, teacher)
    targets = _targets(sp, target)
    ds = sp.dataset(targets[0])
    truth = {t: sp.ground_truth(t) for t in targets}
    arch_list = _arch_list(sp, archs, sample, sample_seed)
    capped = sample if archs is None and sample is not None and sample > len(arch_list) else None
    arch_list = _fit_targets(sp, target, targets, truth, arch_list, archs is not None)
    names, ensembles = parse_proxies(proxies, has_teacher=teacher is not None, space=sp)
    shard_t = parse_shard(shard)
    config = build(
        RankConfig,
        space=sp.name,
        teacher=teacher,
        targets=tuple(targets),
        num_classes=ds.num_classes,
        image_size=ds.image_size,
        batch_size=batch_size,
        seeds=tuple(seed_list),
        init=init,
        data=data,
        device=device,
        precision=precision,
        engine=engine,
        sample=sample,
        sample_seed=sample_seed,
        n_archs=len(arch_list),
        proxies=tuple(names),
        ensembles={k: tuple(v) for k, v in ensembles.items()},
        shard=shard_t,
        data_root=str(Path(data_root).expanduser()) if data_root else None,
    )
    return _Plan(
        sp, config, arch_list, targets, truth, names, ensembles, seed_list, shard_t, capped
    )


#: Below this many architectures a rank correlation is mostly chance, and ``rank`` says so.
FEW_ARCHS = 10


def size_notes(plan: _Plan, ranked: int) -> None:
    """Say, once a run has scored, what its size means: a ``--sample`` larger than the space's
    ground truth ranked everything there is, and a correlation over fewer than :data:`FEW_ARCHS`
    architectures is mostly chance (a random order has Kendall's tau 1 with probability
    ``1/n!``). Printed after the run's checks, so a one-line error is never preceded by them."""
    if plan.capped is not None:
        print(
            f"diswot: note: space '{plan.space.name}' has {len(plan.archs)} architectures with "
            f"ground truth; --sample {plan.capped} ranked all {len(plan.archs)}",
            file=sys.stderr,
        )
    if ranked < FEW_ARCHS:
        print(
            f"diswot: warning: only {ranked} architectures ranked: their correlations are mostly "
            f"chance (a random order has Kendall tau 1 with probability "
            f"1/{math.factorial(ranked):,}); rank at least {FEW_ARCHS} (--sample or --archs)",
            file=sys.stderr,
        )
