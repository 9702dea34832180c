"""Training-free student search: aging evolution, random and exhaustive search under a size budget.

The search is a **deterministic function of (seed, scores)**. All randomness comes from one
``random.Random(seed)``, and the only other input that steers it is the score of each candidate. That
is what makes resuming exact: ``candidates.jsonl`` records every scored candidate in order, and a
resumed run replays the algorithm from the start, answering the first N "score this" requests from the
file (checking the replayed arch is the recorded one) and only scoring what comes after. The RNG stream,
the population and hence the winner are identical to an uninterrupted run, whatever the point at which
the earlier process died (SIGKILL included: a half-written last line is dropped).

Rules every algorithm follows:

* a candidate is checked against the budget **before** it is scored; inadmissible samples/mutations are
  redrawn (bounded by ``max_retries``); a budget that admits nothing raises :class:`DiswotError`;
* a candidate already scored is looked up, not rescored: it counts as a population member but not as a
  new scored candidate (``cycles`` counts scored candidates);
* ``stall_limit`` consecutive steps without a new candidate (space or budget exhausted) end the search;
* ground truth is looked up only after the winner is decided, for the report.

Aging evolution (Real et al. 2019) as the paper uses it: a tournament of ``sample_size`` members drawn
from the population, the tournament's **best** is the parent, its mutated child joins the population and
the **oldest** member leaves.

With ``in_flight`` K > 1 (``--workers``, ``--backend ray``) the evolution is asynchronous: K candidates
are scored at once on a pool of workers (:mod:`diswot.parallel`), a new proposal is made whenever a slot
frees, and each result joins the population as soon as it is taken. Results are taken in *proposal*
order, not completion order, so the determinism above still holds with ``(seed, in_flight)`` in place
of the seed, on any backend; K = 1 is the serial algorithm step for step.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from diswot import __version__
from diswot.errors import DiswotError
from diswot.models.cost import ModelCost
from diswot.runtime import parse_device, refuse_file, resolve_device, run_folder
from diswot.spaces import SearchSpace, get_space

__all__ = [
    "ALGORITHMS",
    "Budget",
    "Evaluation",
    "ProxyObjective",
    "SearchResult",
    "format_count",
    "load_candidates",
    "parse_count",
    "run_search",
]

ALGORITHMS: tuple[str, ...] = ("evolution", "random", "exhaustive")

#: Paper defaults (NB201): population 36, tournament 8, 1,000 scored candidates.
DEFAULT_POPULATION = 36
DEFAULT_SAMPLE_SIZE = 8
DEFAULT_CYCLES = 1000

#: Spaces this small default to exhaustive search (S1: 64 students).
EXHAUSTIVE_UP_TO = 1000

CANDIDATES = "candidates.jsonl"
SETTINGS = "settings.json"
RESULT = "result.json"
PLOT = "progress.png"

# ------------------------------------------------------------------------------------------ budgets

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str | int | float | None, what: str = "count") -> int | None:
    """``278324``, ``"100M"``, ``"1.5G"``, ``"40.82M"``, ``"250k"`` -> an integer (``None`` stays)."""
    if text is None:
        return None
    if isinstance(text, bool):
        raise DiswotError(f"{what} must be a number like 278324, 100M or 1.5G; got {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise DiswotError(f"{what} must be a non-negative number; got {text!r}")
        return int(round(text))
    m = _COUNT.match(str(text))
    if not m:
        raise DiswotError(
            f"{what} must be a number like 278324, 100M, 40.82M or 1.5G (suffixes k, M, G); "
            f"got {text!r}"
        )
    return int(round(float(m.group(1)) * _SUFFIX[m.group(2).lower()]))


def format_count(n: int | float | None) -> str:
    """Human form of a count: ``40818944`` -> ``"40.82M"``, ``278324`` -> ``"278.32k"``."""
    if n is None:
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


@dataclass(frozen=True)
class Budget:
    """Inclusive bounds on parameters and FLOPs; ``None`` = unbounded."""

    max_params: int | None = None
    max_flops: int | None = None
    min_params: int | None = None
    min_flops: int | None = None

    @classmethod
    def parse(
        cls,
        max_params: str | int | None = None,
        max_flops: str | int | None = None,
        min_params: str | int | None = None,
        min_flops: str | int | None = None,
    ) -> Budget:
        b = cls(
            parse_count(max_params, "--max-params"),
            parse_count(max_flops, "--max-flops"),
            parse_count(min_params, "--min-params"),
            parse_count(min_flops, "--min-flops"),
        )
        for what, lo, hi in (
            ("params", b.min_params, b.max_params),
            ("flops", b.min_flops, b.max_flops),
        ):
            if lo is not None and hi is not None and lo > hi:
                raise DiswotError(
                    f"--min-{what} {format_count(lo)} exceeds --max-{what} {format_count(hi)}; "
                    "swap or loosen them"
                )
        return b

    @property
    def unbounded(self) -> bool:
        return all(v is None for v in self.to_dict().values())

    def admits(self, cost: ModelCost) -> bool:
        return (
            (self.max_params is None or cost.params <= self.max_params)
            and (self.max_flops is None or cost.flops <= self.max_flops)
            and (self.min_params is None or cost.params >= self.min_params)
            and (self.min_flops is None or cost.flops >= self.min_flops)
        )

    def text(self) -> str:
        """``"params <= 278,324 (278.32k)"``-style conjunction, or ``"none"``."""
        parts = []
        for label, lo, hi in (
            ("params", self.min_params, self.max_params),
            ("FLOPs", self.min_flops, self.max_flops),
        ):
            if lo is not None:
                parts.append(f"{label} >= {lo:,} ({format_count(lo)})")
            if hi is not None:
                parts.append(f"{label} <= {hi:,} ({format_count(hi)})")
        return " and ".join(parts) or "none"

    def to_dict(self) -> dict[str, int | None]:
        return {
            "max_params": self.max_params,
            "max_flops": self.max_flops,
            "min_params": self.min_params,
            "min_flops": self.min_flops,
        }


# ------------------------------------------------------------------------------------------ objective


@dataclass(frozen=True)
class Evaluation:
    """What an objective returns: ``score`` (larger is better), the raw ``value`` and components."""

    score: float
    value: float | None = None
    components: dict[str, float] = field(default_factory=dict)


Objective = Callable[[str], "float | Evaluation"]


class ProxyObjective:
    """A registered proxy (DisWOT by default) as a search objective, oriented by the proxy's sign.

    For ``diswot`` the components ``ms`` and ``mr`` (the semantic and relation terms; they share its
    forward pass) are recorded too.
    """

    def __init__(self, scorer: Any, proxy: str = "diswot") -> None:
        from diswot.proxies import get_proxy

        self.spec = get_proxy(proxy)
        self.name = self.spec.name
        self.scorer = scorer
        self.proxies = [self.name] + (["ms", "mr"] if self.name == "diswot" else [])

    def __call__(self, arch: str) -> Evaluation:
        res = self.scorer.score(arch, self.proxies)
        value = res.values[self.name]
        return Evaluation(
            score=value * self.spec.sign,
            value=value,
            components={k: res.values[k] for k in self.proxies[1:]},
        )


def _as_evaluation(out: float | Evaluation) -> Evaluation:
    if isinstance(out, Evaluation):
        return out
    v = float(out)
    return Evaluation(score=v, value=v)


def _key(rec: dict) -> float:
    """Selection key: NaN / missing scores rank last."""
    s = rec["score"]
    return s if s is not None and math.isfinite(s) else -math.inf


def _json_float(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


# ------------------------------------------------------------------------------------------ run folder


def load_candidates(path: Path) -> list[dict]:
    """Records of ``candidates.jsonl`` in step order.

    A half-written last line (the process was killed mid-write) is dropped and cut from the file so
    appending continues cleanly; any other unreadable or out-of-order line raises :class:`DiswotError`.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    records: list[dict] = []
    good = 0  # bytes of the verified prefix
    for i, line in enumerate(lines):
        last = i == len(lines) - 1 or (i == len(lines) - 2 and lines[-1] == b"")
        if i == len(lines) - 1 and line == b"":
            break
        try:
            rec = json.loads(line)
            ok = (
                isinstance(rec, dict)
                and rec.get("step") == len(records) + 1
                and isinstance(rec.get("arch"), str)
                and "score" in rec
            )
        except (json.JSONDecodeError, UnicodeDecodeError):
            ok = False
        if not ok:
            if last:
                break
            raise DiswotError(
                f"{path} line {i + 1} is corrupt; fix or delete that line (and those after it), "
                "or start again with another --out"
            )
        records.append(rec)
        good += len(line) + 1
    if good < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good)
    return records


def _write_json(path: Path, obj: Any) -> None:
    """Atomic write (temp file + rename): a kill never leaves a half-written settings/result file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    return {
        "diswot": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


#: Settings a resumed run must share with the run it continues (``cycles`` may grow).
_FIXED_SETTINGS = (
    "space",
    "target",
    "num_classes",
    "image_size",
    "teacher",
    "objective",
    "algorithm",
    "seed",
    "population",
    "sample_size",
    "crossover_prob",
    "budget",
    "batch_size",
    "probe_seeds",
    "init",
    "data",
    "flop_convention",
    "precision",
)


def read_settings(out_dir: str | Path) -> dict:
    """The settings stored in a run folder (what ``--resume DIR`` fills unspecified options from)."""
    path = Path(out_dir) / SETTINGS
    if not path.exists():
        raise DiswotError(
            f"{out_dir} holds no search run ({SETTINGS} missing); check the --resume path"
        )
    try:
        return json.loads(path.read_text())["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DiswotError(f"{path} is unreadable; start again with another --out") from exc


def _check_folder(out: Path, settings: dict, resume: bool) -> list[dict]:
    """Refuse a folder that would mix runs; on resume return the records already scored."""
    if not resume:
        if refuse_file(out).exists() and any(out.iterdir()):
            raise DiswotError(
                f"{out} already exists and is not empty; use --resume {out} or another --out"
            )
        return []
    from diswot.probe import stored_setting

    old = read_settings(out)
    diff = [k for k in _FIXED_SETTINGS if stored_setting(old, k) != stored_setting(settings, k)]
    if diff:
        shown = ", ".join(f"{k}={old.get(k)!r} (now {settings.get(k)!r})" for k in diff[:3])
        raise DiswotError(
            f"{out} holds a search with other settings: {shown}; resume with the same settings "
            "or use another --out"
        )
    records = load_candidates(out / CANDIDATES)
    if settings["cycles"] is not None and len(records) > settings["cycles"]:
        raise DiswotError(
            f"{out} already holds {len(records)} scored candidates; resume with "
            f"--cycles {len(records)} or more"
        )
    return records


def _write_settings(out: Path, settings: dict) -> None:
    run_folder(out)
    _write_json(out / SETTINGS, {"settings": settings, "versions": _versions()})


# ------------------------------------------------------------------------------------------ engine


class _Engine:
    """Budget checks, dedup, replay of recorded scores, recording of new ones, progress."""

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget,
        num_classes: int,
        image_size: int,
        objective: Objective | None,
        cycles: int,
        recorded: list[dict],
        out_file: Path | None,
        max_retries: int,
    ) -> None:
        self.space = space
        self.budget = budget
        self.num_classes = num_classes
        self.image_size = image_size
        self.objective = objective
        self.cycles = cycles
        self.recorded = recorded
        self.out_file = out_file
        self.max_retries = max_retries
        self.scored: dict[str, dict] = {}
        self.order: list[dict] = []
        self.history: dict[str, list] = {"step": [], "best": [], "population_mean": []}
        self.best: dict | None = None
        self.steps = 0
        self.rejected = 0
        self._admissible: list[str] | None = None
        self._sum, self._n = 0.0, 0
        self._fh = None
        self._claimed = 0
        self._in_flight: set[str] = set()
        self.pool: Any = None  # set by run_search: evaluates the objective, inline or on workers
        self.in_flight = 1  # candidates scored at once (claims not yet finished)
        self.bar = tqdm(disable=True)

    def start(self, progress: bool, name: str) -> None:
        """Open the progress bar (after the slow, failure-prone setup is done)."""
        self.bar = tqdm(
            total=self.cycles,
            desc=f"search {name}",
            unit="cand",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )

    def check_budget(self, seed: int, exhaustive: bool) -> None:
        """Fail fast, before any file or teacher, when the budget admits nothing.

        Draws from a private RNG and resets the counters, so the search's own stream is untouched.
        """
        if exhaustive:
            pool = self.admissible_list()
            assert pool is not None
            self.cycles = min(self.cycles, len(pool))
        elif not self.budget.unbounded:
            self.sample_admissible(random.Random(f"budget-check-{seed}"))
        self.rejected = 0

    # -- budget ------------------------------------------------------------------------------------
    def cost(self, arch: str) -> ModelCost:
        return self.space.cost(arch, self.num_classes, self.image_size)

    def admits(self, arch: str) -> bool:
        ok = self.budget.admits(self.cost(arch))
        if not ok:
            self.rejected += 1
        return ok

    def admissible_list(self) -> list[str] | None:
        """All admissible archs of an enumerable space (computed once), else ``None``."""
        if self._admissible is None:
            archs = self.space.enumerate()
            if archs is None:
                return None
            self._admissible = [a for a in archs if self.budget.admits(self.cost(a))]
            if not self._admissible:
                raise DiswotError(self._nothing_admitted(archs, f"all {len(archs)} architectures"))
        return self._admissible

    def _nothing_admitted(self, archs: Iterable[str], what: str) -> str:
        costs = [self.cost(a) for a in archs]
        p = [c.params for c in costs]
        f = [c.flops for c in costs]
        return (
            f"the budget ({self.budget.text()}) admits none of {what} of space "
            f"'{self.space.name}' (params {format_count(min(p))}..{format_count(max(p))}, FLOPs "
            f"{format_count(min(f))}..{format_count(max(f))}); loosen --max-params/--max-flops"
        )

    def sample_admissible(self, rng: random.Random) -> str:
        """A sample within budget: rejection sampling, then the admissible list of small spaces."""
        seen = []
        for _ in range(self.max_retries):
            arch = self.space.sample(rng)
            if self.admits(arch):
                return arch
            seen.append(arch)
        pool = self.admissible_list()
        if pool is None:
            raise DiswotError(self._nothing_admitted(seen, f"{len(seen)} random samples"))
        return rng.choice(pool)

    def mutate_admissible(self, parent: str, rng: random.Random) -> str | None:
        for _ in range(self.max_retries):
            child = self.space.mutate(parent, rng)
            if self.admits(child):
                return child
        return None

    # -- scoring -----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return len(self.order) >= self.cycles

    @property
    def claimed_enough(self) -> bool:
        """No new candidate may be claimed: ``cycles`` are scored or on their way."""
        return self._claimed >= self.cycles

    def claim(self, arch: str) -> tuple[str, str, Any]:
        """Reserve the next step for ``arch`` and start scoring it; :meth:`finish` collects it.

        Claims are finished in claim order, so the step numbers, ``candidates.jsonl`` and every
        later proposal are the same whichever worker finished first. An arch already scored or in
        flight is a duplicate: it takes no step and resolves to the first one's record.
        """
        if arch in self.scored or arch in self._in_flight:
            return ("dup", arch, None)
        step = self._claimed + 1
        cost = self.cost(arch)
        if not self.budget.admits(cost):  # defensive: every caller checks first
            raise AssertionError(f"inadmissible candidate {arch} reached scoring")
        self._claimed += 1
        self._in_flight.add(arch)
        if step <= len(self.recorded):
            rec = self.recorded[step - 1]
            if rec["arch"] != arch:
                raise DiswotError(
                    f"{CANDIDATES} step {step} holds {rec['arch']!r} but this search proposes {arch!r}; "
                    "the folder was written with other settings or code, use another --out"
                )
            if (
                rec.get("params", cost.params) != cost.params
                or rec.get("flops", cost.flops) != cost.flops
            ):
                raise DiswotError(
                    f"{CANDIDATES} step {step} records another size for {arch!r} than this code "
                    "computes; the folder was written with other settings, use another --out"
                )
            if rec["score"] is None:
                rec["score"] = math.nan
            return ("replay", arch, rec)
        assert self.pool is not None
        return ("new", arch, (step, cost, self.pool.submit(arch)))

    def finish(self, claim: tuple[str, str, Any]) -> tuple[dict, bool]:
        """The record of a claim (blocking until its score is in) and whether it is new."""
        kind, arch, data = claim
        self.steps += 1
        if kind == "dup":
            return self.scored[arch], False
        if kind == "replay":
            rec = data
        else:
            step, cost, ticket = data
            assert self.pool is not None
            ev, seconds = self.pool.result(ticket)
            rec = {
                "step": step,
                "arch": arch,
                "score": float(ev.score),
                "value": float(ev.score if ev.value is None else ev.value),
                "components": {k: float(v) for k, v in ev.components.items()},
                "params": cost.params,
                "flops": cost.flops,
                "seconds": round(seconds, 4),
            }
            self._append(rec)
        self._in_flight.discard(arch)
        self.scored[arch] = rec
        self.order.append(rec)
        if self.best is None or _key(rec) > _key(self.best):
            self.best = rec
        self.bar.update(1)
        self.bar.set_postfix(best=f"{_key(self.best):.4g}", refresh=False)
        return rec, True

    def evaluate(self, arch: str) -> tuple[dict, bool]:
        """The record of ``arch``: looked up if already scored, replayed if recorded, else scored."""
        return self.finish(self.claim(arch))

    def note(self, population: Iterable[dict] | None = None) -> None:
        """History point after a new candidate: best so far and the population's mean score.

        ``population=None`` means "everything scored so far" (random/exhaustive search), kept as a
        running sum so long runs stay linear.
        """
        if population is None:
            v = _key(self.order[-1])
            if math.isfinite(v):
                self._sum += v
                self._n += 1
            mean = self._sum / self._n if self._n else None
        else:
            finite = [v for v in map(_key, population) if math.isfinite(v)]
            mean = float(np.mean(finite)) if finite else None
        self.history["step"].append(len(self.order))
        self.history["best"].append(_json_float(_key(self.best)) if self.best else None)
        self.history["population_mean"].append(mean)

    def _append(self, rec: dict) -> None:
        if self.out_file is None:
            return
        if self._fh is None:
            self._fh = self.out_file.open("a")
        line = {
            **rec,
            "score": _json_float(rec["score"]),
            "value": _json_float(rec["value"]),
            "components": {k: _json_float(v) for k, v in rec["components"].items()},
        }
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self.bar.close()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# ------------------------------------------------------------------------------------------ algorithms


def _evolution(
    eng: _Engine,
    rng: random.Random,
    population_size: int,
    sample_size: int,
    crossover_prob: float,
    stall_limit: int,
) -> str:
    """Aging evolution with ``eng.in_flight`` candidates scored at once (asynchronous evolution).

    A proposal is made whenever a slot is free: a random sample while the population plus the
    candidates in flight are fewer than ``population_size``, else a child of the current
    population's tournament winner. Each finished candidate joins the population at once (the
    oldest leaves). With one in flight this is the serial algorithm, step for step.
    """
    population: deque[dict] = deque()
    queue: deque[tuple[str, str, Any]] = deque()
    rule = (population_size, sample_size, crossover_prob)
    stall = 0
    while True:
        while len(queue) < eng.in_flight and not eng.claimed_enough and stall < stall_limit:
            if not population and len(queue) >= population_size:
                break  # every slot holds an initial sample: wait for the first results
            child = _proposal(eng, rng, list(population), len(queue), *rule)
            if child is None:
                stall += 1
                continue
            queue.append(eng.claim(child))
        if not queue:
            break
        rec, new = eng.finish(queue.popleft())
        population.append(rec)
        if len(population) > population_size:
            population.popleft()  # aging: the oldest leaves, whatever its score
        stall = 0 if new else stall + 1
        if new:
            eng.note(population)
    return "cycles" if eng.done else "stalled"


def _proposal(
    eng: _Engine,
    rng: random.Random,
    members: list[dict],
    in_flight: int,
    population_size: int,
    sample_size: int,
    crossover_prob: float,
) -> str | None:
    """Aging evolution's next proposal: a random sample while the population plus the ``in_flight``
    candidates are fewer than ``population_size``, else a child of a tournament winner among
    ``members`` (``None``: no child fits the budget)."""
    if len(members) + in_flight < population_size:
        return eng.sample_admissible(rng)
    return _propose_child(eng, rng, members, sample_size, crossover_prob)


def _propose_child(
    eng: _Engine, rng: random.Random, members: list[dict], sample_size: int, crossover_prob: float
) -> str | None:
    """A mutated (or crossed-over) child of the best of a random tournament; None if none fits."""
    parent = max(rng.sample(members, min(sample_size, len(members))), key=_key)
    if crossover_prob > 0 and rng.random() < crossover_prob:
        other = max(rng.sample(members, min(sample_size, len(members))), key=_key)
        mixed = eng.space.crossover(parent["arch"], other["arch"], rng)
        if mixed is not None and mixed != parent["arch"] and eng.admits(mixed):
            return mixed
    return eng.mutate_admissible(parent["arch"], rng)


def _random(eng: _Engine, rng: random.Random, stall_limit: int) -> str:
    queue: deque[tuple[str, str, Any]] = deque()
    stall = 0
    while True:
        while len(queue) < eng.in_flight and not eng.claimed_enough and stall < stall_limit:
            queue.append(eng.claim(eng.sample_admissible(rng)))
        if not queue:
            break
        _, new = eng.finish(queue.popleft())
        stall = 0 if new else stall + 1
        if new:
            eng.note()
    return "cycles" if eng.done else "stalled"


def _exhaustive(eng: _Engine) -> str:
    pool = eng.admissible_list()
    if pool is None:
        raise DiswotError(
            f"space '{eng.space.name}' is too large to enumerate; use --algorithm evolution or random"
        )
    eng.rejected += len(eng.space.enumerate() or []) - len(pool)
    queue: deque[tuple[str, str, Any]] = deque()
    todo = iter(pool)
    while True:
        while len(queue) < eng.in_flight and not eng.claimed_enough:
            arch = next(todo, None)
            if arch is None:
                break
            queue.append(eng.claim(arch))
        if not queue:
            break
        _, new = eng.finish(queue.popleft())
        if new:
            eng.note()
    return "exhausted" if len(eng.order) == len(pool) else "cycles"


# ------------------------------------------------------------------------------------------ result


@dataclass
class SearchResult:
    """Outcome of :func:`run_search`; :meth:`to_dict` is what ``result.json`` holds."""

    winner: dict
    top: list[dict]
    candidates: list[dict]
    history: dict[str, list]
    settings: dict
    budget: str
    cost_convention: str
    ground_truth: dict[str, float]
    stop_reason: str
    steps: int
    rejected: int
    seconds: float
    loop_seconds: float = 0.0
    out_dir: Path | None = None

    @property
    def n_scored(self) -> int:
        return len(self.candidates)

    def to_dict(self) -> dict:
        return {
            "winner": self.winner,
            "top": self.top,
            "ground_truth": self.ground_truth,
            "budget": self.budget,
            "cost_convention": self.cost_convention,
            "n_scored": self.n_scored,
            "steps": self.steps,
            "rejected_by_budget": self.rejected,
            "stop_reason": self.stop_reason,
            "seconds": round(self.seconds, 3),
            "loop_seconds": round(self.loop_seconds, 3),
            "seed": self.settings["seed"],
            "settings": self.settings,
            "versions": _versions(),
            "out_dir": None if self.out_dir is None else str(self.out_dir),
            "history": self.history,
        }

    def summary(self) -> str:
        """A few human lines: winner, budget and convention, ground truth, where files are."""
        w = self.winner
        s = self.settings
        what = (
            f"target {s['target']}"
            if s.get("target") is not None
            else f"{s['num_classes']} classes, {s['image_size']} px"
        )
        lines = [
            f"winner  {w['arch']}",
            f"score   {w['score']:.6g} ({s['objective']}, larger is better)",
            f"size    {w['params']:,} params ({format_count(w['params'])}), "
            f"{w['flops']:,} FLOPs ({format_count(w['flops'])})",
            f"budget  {self.budget}; FLOPs = {self.cost_convention}",
            f"search  {s['algorithm']} on {s['space']} ({what}), teacher "
            f"{s['teacher']}, seed {s['seed']}: {self.n_scored} scored in {self.steps} steps, "
            f"{self.rejected} rejected by budget, stop: {self.stop_reason}, {self.seconds:.1f} s",
        ]
        if self.ground_truth:
            acc = ", ".join(f"{t} {v:.2f}%" for t, v in self.ground_truth.items())
            lines.append(f"truth   {acc} (shipped table, looked up after the search)")
        if self.out_dir is not None:
            lines.append(f"files   {self.out_dir}/ ({SETTINGS}, {CANDIDATES}, {RESULT}, {PLOT})")
        return "\n".join(lines)


def _public(rec: dict) -> dict:
    """A record without timing: what results and the resume-equivalence guarantee cover."""
    return {
        "step": rec["step"],
        "arch": rec["arch"],
        "score": _json_float(rec["score"]),
        "value": _json_float(rec.get("value")),
        "components": dict(rec.get("components") or {}),
        "params": rec.get("params"),
        "flops": rec.get("flops"),
    }


def plot_progress(history: dict[str, list], path: Path, title: str) -> None:
    """Best score so far and the population's mean score against scored candidates."""
    import matplotlib

    matplotlib.use("Agg")
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


# ------------------------------------------------------------------------------------------ entry point


def default_algorithm(space: SearchSpace) -> str:
    """Exhaustive for small enumerable spaces (S1), aging evolution otherwise."""
    n = space.size()
    return "exhaustive" if n is not None and n <= EXHAUSTIVE_UP_TO else "evolution"


def default_out_dir(space: str) -> Path:
    return Path("runs") / f"search-{space}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _positive(name: str, v: int, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise DiswotError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


def run_search(
    space: str | SearchSpace = "nb201",
    *,
    teacher: str | nn.Module | None = None,
    target: str | None = None,
    algorithm: str | None = None,
    cycles: int | None = None,
    population: int = DEFAULT_POPULATION,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    crossover_prob: float = 0.0,
    seed: int = 0,
    max_params: str | int | None = None,
    max_flops: str | int | None = None,
    min_params: str | int | None = None,
    min_flops: str | int | None = None,
    proxy: str = "diswot",
    objective: Objective | None = None,
    probe_seeds: int | Sequence[int] = 1,
    batch_size: int = 64,
    init: str = "gaussian",
    data: str = "synthetic",
    data_root: str | None = None,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    max_retries: int = 1000,
    stall_limit: int | None = None,
    top_k: int = 10,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.0,
    in_flight: int | None = None,
    precision: str = "fp32",
    engine: str = "auto",
    on_start: Callable[[Path], None] | None = None,
) -> SearchResult:
    """Search ``space`` for the student that maximises the objective within the budget.

    Args:
        space: a registered space name (``s1``, ``nb201``, ...) or a :class:`SearchSpace` instance.
        teacher: model name for :func:`~diswot.models.create_model` (built with the target's class
            count) or an ``nn.Module``; default ``space.default_teacher``.
        target: the space's dataset target (fixes class count and resolution); default per space.
        algorithm: ``evolution`` | ``random`` | ``exhaustive``; default exhaustive for spaces of at
            most 1,000 archs, evolution otherwise.
        cycles: scored candidates (exhaustive: at most this many; default all admissible).
        population, sample_size: aging evolution's population and tournament size.
        crossover_prob: chance that a child is the crossover of two tournament winners (0 = the
            paper's mutation-only evolution).
        seed: the search's RNG seed (independent of the probe seeds).
        max_params, max_flops, min_params, min_flops: inclusive budget (``"100M"`` etc. accepted).
        proxy: registered proxy to maximise (oriented by its sign); ignored when ``objective`` is given.
        objective: ``f(arch) -> float | Evaluation`` replacing the proxy (cheap objectives for tests).
        probe_seeds: number of probe seeds (``range(n)``) or the seeds to average the proxy over.
        out_dir: run folder (``None``: nothing is written); must be new or empty unless ``resume``.
        resume: continue the run in ``out_dir`` (same settings; ``cycles`` may grow).
        max_retries: redraws of an over-budget sample or mutation before giving up on it.
        stall_limit: steps in a row without a new candidate that end the search (default
            ``max(1000, 20 * population)``).
        workers: processes (``backend="local"``) or Ray actors (``"ray"``; 0 = the cluster's
            CPUs, or GPUs / ``gpus_per_task``) that score candidates, each with its own Scorer.
        backend: ``local`` (in-process for one worker, spawned processes for more) or ``ray``.
        address, gpus_per_task: Ray cluster address (default: a local runtime) and GPUs per actor.
        in_flight: candidates scored at once (default ``workers``). Results are taken in proposal
            order, so a run is a deterministic function of ``(seed, in_flight)`` whatever the
            backend; ``in_flight=1`` is the serial search.
        precision: ``fp32`` (default) or ``bf16`` for the students' forward pass (see
            :class:`~diswot.probe.Scorer`); a resumed run keeps its own.
        engine: ``auto`` (default), ``modules`` or ``supernet`` (see
            :data:`~diswot.probe.ENGINES`); the same scores either way, so a resume may change it.
        on_start: called with ``out_dir`` once every setting is checked, the teacher built and the
            workers started, just before the run folder is written (the CLI announces it there).
    """
    t0 = time.perf_counter()
    sp = get_space(space)
    target = sp.default_target if target is None else target
    spec = sp.dataset(target)
    if target is not None and target.lower() in {t.lower() for t in sp.targets}:
        target = sp._check_target(target)
    budget = Budget.parse(max_params, max_flops, min_params, min_flops)
    algorithm = (algorithm or default_algorithm(sp)).lower()
    if algorithm not in ALGORITHMS:
        raise DiswotError(f"unknown algorithm '{algorithm}'; known: {', '.join(ALGORITHMS)}")
    if algorithm == "exhaustive" and sp.enumerate() is None:
        raise DiswotError(
            f"space '{sp.name}' is too large to enumerate; use --algorithm evolution or random"
        )
    if cycles is None and algorithm != "exhaustive":
        cycles = DEFAULT_CYCLES
    if cycles is not None:
        cycles = _positive("--cycles", cycles)
    population = _positive("--population", population)
    sample_size = _positive("--sample-size", sample_size)
    if sample_size > population:
        raise DiswotError(
            f"--sample-size {sample_size} exceeds --population {population}; lower it"
        )
    if not 0.0 <= float(crossover_prob) <= 1.0:
        raise DiswotError(f"--crossover-prob must be in [0, 1]; got {crossover_prob}")
    max_retries = _positive("max_retries", max_retries)
    from diswot.parallel import check_backend

    check_backend(backend, address, gpus_per_task)
    workers = _positive("--workers", workers, minimum=0 if backend == "ray" else 1)
    if in_flight is not None:
        in_flight = _positive("--in-flight", in_flight)
    stall_limit = _positive("stall_limit", stall_limit or max(1000, 20 * population))
    seed_list = list(range(probe_seeds)) if isinstance(probe_seeds, int) else list(probe_seeds)
    if not seed_list:
        raise DiswotError("--seeds must be at least 1")
    from diswot.probe import check_precision, module_label, resolve_engine

    check_precision(precision)
    engine = resolve_engine(engine, getattr(sp, "supernet", None), init)
    # A Ray cluster's workers may have the GPU its head lacks: there only the name is checked here.
    device = str(resolve_device(device)) if backend == "local" else parse_device(device)
    teacher = sp.default_teacher if teacher is None else teacher
    if objective is None:
        from diswot.proxies import get_proxy, resolve_proxies

        objective_name = get_proxy(proxy).name
        # The same applicability checks as rank's (a BN-statistics proxy on a BN-free space...).
        resolve_proxies(
            [objective_name],
            has_teacher=True,
            has_batchnorm=getattr(sp, "has_batchnorm", True),
            space=sp.name,
        )
    else:
        objective_name = getattr(objective, "name", getattr(objective, "__name__", "custom"))

    settings = {
        "space": sp.name,
        "target": target,
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "teacher": teacher if isinstance(teacher, str) else module_label(teacher),
        "objective": objective_name,
        "algorithm": algorithm,
        "seed": int(seed),
        "cycles": cycles,
        "population": population,
        "sample_size": sample_size,
        "crossover_prob": float(crossover_prob),
        "budget": budget.to_dict(),
        "batch_size": batch_size,
        "probe_seeds": seed_list,
        "init": init,
        "data": data,
        # Recorded, not compared: a resume reuses it, and a moved dataset may be pointed at anew.
        "data_root": str(Path(data_root).expanduser()) if data_root else None,
        "device": str(device),
        "flop_convention": sp.flop_convention,
        "precision": precision,
        "engine": engine,  # recorded, not compared: every engine gives the same scores
    }

    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise DiswotError("resuming needs the run folder; pass --resume DIR")
    # Folder first (cheap), then the teacher (slow, may fail), then write: a failed start leaves
    # no half-made run folder behind.
    recorded = _check_folder(out, settings, resume) if out is not None else []
    if resume and out is not None:
        # The number in flight shapes the proposals: a resume keeps the recorded one (whatever
        # the workers now), and refuses another one asked for explicitly.
        done_with = int(read_settings(out).get("in_flight", 1))
        if in_flight is not None and in_flight != done_with:
            raise DiswotError(
                f"{out} was searched with {done_with} candidates in flight; resume with "
                f"--in-flight {done_with} (any --workers) or use another --out"
            )
        in_flight = done_with
    eng = _Engine(
        sp,
        budget,
        spec.num_classes,
        spec.image_size,
        objective,
        10**18 if cycles is None else cycles,
        recorded,
        out / CANDIDATES if out is not None else None,
        max_retries,
    )
    eng.check_budget(int(seed), exhaustive=algorithm == "exhaustive")
    if eng.objective is None:
        factory: Any = _ProxyObjectiveFactory(
            (sp, teacher, objective_name, spec.num_classes, spec.image_size, seed_list,
             batch_size, init, data, data_root, device, precision, engine),
        )  # fmt: skip
        # Built here too, on a pool as well: a bad teacher fails now, with its own message.
        eng.objective = factory.objective()
    else:
        factory = _GivenObjective(eng.objective)
    t_loop = time.perf_counter()
    rng = random.Random(int(seed))
    try:
        eng.pool = _make_pool(factory, eng, backend, workers, address, gpus_per_task, device)
        eng.in_flight = in_flight or getattr(eng.pool, "workers", workers) or 1
        settings["in_flight"] = eng.in_flight
        settings["workers"] = getattr(eng.pool, "workers", workers)
        settings["backend"] = backend
        if out is not None:
            if on_start is not None:
                on_start(out)
            _write_settings(out, settings)
        eng.start(progress, sp.name)
        if algorithm == "evolution":
            stop = _evolution(eng, rng, population, sample_size, float(crossover_prob), stall_limit)
        elif algorithm == "random":
            stop = _random(eng, rng, stall_limit)
        else:
            stop = _exhaustive(eng)
    finally:
        eng.close()
        if eng.pool is not None:
            eng.pool.close()
    loop_seconds = time.perf_counter() - t_loop
    if not eng.order:
        raise DiswotError("the search scored no candidate; raise --cycles or loosen the budget")
    if len(recorded) > len(eng.order):
        raise DiswotError(
            f"{out}/{CANDIDATES} holds {len(recorded)} candidates but this search ends after "
            f"{len(eng.order)}; it was written with other settings, use another --out"
        )

    # Decided: rank by score (stable, so ties go to the earlier candidate), then look up truth.
    ranked = sorted(eng.order, key=_key, reverse=True)
    winner = _public(ranked[0])
    top = [_public(r) for r in ranked[:top_k]]
    truth: dict[str, float] = {}
    for t in sp.targets:
        table = sp.ground_truth(t)
        if winner["arch"] in table:
            truth[t] = table[winner["arch"]]
            for r in top:
                if r["arch"] in table:
                    r.setdefault("ground_truth", {})[t] = table[r["arch"]]
    result = SearchResult(
        winner=winner,
        top=top,
        candidates=[_public(r) for r in eng.order],
        history=eng.history,
        settings=settings,
        budget=budget.text(),
        cost_convention=sp.cost_convention(spec.num_classes, spec.image_size),
        ground_truth=truth,
        stop_reason=stop,
        steps=eng.steps,
        rejected=eng.rejected,
        seconds=time.perf_counter() - t0,
        loop_seconds=loop_seconds,
        out_dir=out,
    )
    if out is not None:
        _write_json(out / RESULT, result.to_dict())
        plot_progress(eng.history, out / PLOT, f"{algorithm} on {sp.name}: {objective_name}")
    _check_scores(eng.order, objective_name, out)
    return result


def _check_scores(records: list[dict], objective: str, out: Path | None) -> None:
    """Refuse a search whose scores cannot pick a winner, and warn when they barely can.

    No finite score means there is no winner to report: a one-line error (after the files are
    written, so nothing is lost). All scores equal means the "winner" is the first candidate: a
    note. Both usually mean the objective is undefined or constant for this probe; the known cases
    are in ``docs/proxies.md`` ("Known limits")."""
    finite = [
        r["score"] for r in records if r.get("score") is not None and math.isfinite(r["score"])
    ]
    kept = f"; the scored candidates are kept in {out}" if out is not None else ""
    hint = "docs/proxies.md, 'Known limits', says when each proxy is undefined"
    if not finite:
        raise DiswotError(
            f"all {len(records)} candidates scored NaN or infinite with {objective}, so there is "
            f"no winner{kept}; {hint} (epe_nas: raise --batch-size above the class count)"
        )
    if len(records) > 1 and len(finite) == len(records) and len(set(finite)) == 1:
        print(
            f"diswot: note: all {len(records)} candidates scored {finite[0]:.6g} with "
            f"{objective}, so the winner is just the first one; {hint}",
            file=sys.stderr,
        )


@dataclass
class _Timed:
    """An objective that also reports its own wall time (measured where it runs)."""

    objective: Objective

    def __call__(self, arch: str) -> tuple[Evaluation, float]:
        t0 = time.perf_counter()
        ev = _as_evaluation(self.objective(arch))
        return ev, time.perf_counter() - t0


@dataclass
class _GivenObjective:
    """Pool factory for a user's objective (it must pickle to run on workers)."""

    given: Objective

    def __call__(self) -> _Timed:
        return _Timed(self.given)


@dataclass
class _ProxyObjectiveFactory:
    """Pool factory for the proxy objective: each worker builds its own Scorer and teacher cache."""

    args: tuple

    def objective(self) -> ProxyObjective:
        return _proxy_objective(*self.args)

    def __call__(self) -> _Timed:
        return _Timed(self.objective())


def _make_pool(
    factory: Any,
    eng: _Engine,
    backend: str,
    workers: int,
    address: str | None,
    gpus_per_task: float,
    device: str,
) -> Any:
    from diswot.parallel import InlinePool, make_pool

    if backend == "local" and workers == 1:
        objective = eng.objective  # already built (and its teacher checked) by run_search
        return InlinePool(lambda: _Timed(objective))
    return make_pool(
        factory,
        backend=backend,
        workers=workers,
        address=address,
        gpus_per_task=gpus_per_task,
        device=device,
    )


def _proxy_objective(
    sp: SearchSpace,
    teacher: str | nn.Module,
    proxy: str,
    num_classes: int,
    image_size: int,
    seeds: list[int],
    batch_size: int,
    init: str,
    data: str,
    data_root: str | None,
    device: str,
    precision: str = "fp32",
    engine: str = "auto",
) -> ProxyObjective:
    """A :class:`ProxyObjective` over a Scorer that builds students with the space's own builder."""
    from diswot.probe import Scorer
    from diswot.proxies import get_proxy

    spec = get_proxy(proxy)
    scorer = Scorer.for_space(
        sp,
        teacher,
        num_classes=num_classes,
        batch_size=batch_size,
        seeds=seeds,
        init=init,
        data=data,
        data_root=data_root,
        image_size=image_size,
        device=device,
        precision=precision,
        engine=engine,
    )
    if spec.needs_teacher:
        for s in seeds:  # fail now (e.g. a teacher with another class count), not mid-search
            scorer.teacher(s)
    return ProxyObjective(scorer, spec.name)
