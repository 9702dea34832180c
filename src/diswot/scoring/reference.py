"""Reference samples: the fixed architectures a composite proxy ranks its terms against.

A composite (:mod:`diswot.proxies.composite`) turns each term of one network into a percentile
within a **reference sample**: ``K`` architectures drawn by the space's own seeded sampling
(``space.sample(random.Random(seed))``, ``K`` times) and scored with the terms under every probe
seed in use. The sample depends only on what changes its values, so one sample serves every score,
rank and search that shares them and a candidate's value never depends on what else was scored.

**Key.** A sample is identified by its key: the space, the teacher (only when a term reads it),
the probe settings that change values (:func:`~diswot.config.fixed_fields` of
:class:`~diswot.config.ProbeConfig`; not the seeds, which a sample grows by, nor the device or
engine), the terms, ``K``, the sampling seed and the diswot version. Its hash names the file.

**Cache.** Samples live in the user's cache folder (:func:`cache_dir`), as
``references/<name>-<hash>.json``, built once and read by every later run. A build appends every
scored architecture to ``<name>-<hash>.jsonl`` (a :class:`~diswot.runfolder.Journal`), so a build
killed at any point continues where it stopped; the finished sample is written atomically and the
journal removed. Processes sharing the folder take a lock file while building, so parallel workers
build a sample once and the others read it. An unreadable or stale file is rebuilt with a note.
Run folders keep a copy of what they used (``reference.json``), which a resume puts back in the
cache if the cache lost it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from diswot import __version__
from diswot.config import ProbeConfig, fixed_fields
from diswot.errors import DiswotError
from diswot.proxies.composite import Composite, get_composite, log_cdf_sum, mid_rank_cdf, oriented
from diswot.proxies.registry import get_proxy
from diswot.runfolder import SETTINGS, Journal, atomic_write_json, json_float
from diswot.scoring.numerics import proxy_value
from diswot.scoring.teacher import module_label, weights_sha256

if TYPE_CHECKING:
    from diswot.scoring.scorer import Scorer
    from diswot.scoring.student import StudentProbe

try:  # POSIX; elsewhere builds are not serialised between processes (each builds the same file)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "REFERENCE",
    "ReferenceSample",
    "cache_dir",
    "check_references",
    "copy_references",
    "install_references",
    "load_reference",
    "read_references",
    "recorded_references",
    "reference_key",
    "reference_settings",
    "run_references",
    "write_references",
]

#: The run folder's copy of the samples a run used: ``{name: sample}``.
REFERENCE = "reference.json"
_FORMAT = 1


def cache_dir() -> Path:
    """``$DISWOT_CACHE``, else ``$XDG_CACHE_HOME/diswot``, else ``~/.cache/diswot``."""
    if os.environ.get("DISWOT_CACHE"):
        return Path(os.environ["DISWOT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "diswot"
    return Path.home() / ".cache" / "diswot"


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def reference_key(
    composite: Composite, space: str, teacher: str | None, config: ProbeConfig
) -> dict[str, Any]:
    """What a sample's values depend on (see the module docstring); ``teacher`` is the teacher's
    label and is left out when no term reads the teacher."""
    reads_teacher = any(get_proxy(t).needs_teacher for t in composite.terms)
    return {
        "space": space,
        "teacher": teacher if reads_teacher else None,
        "probe": {k: _plain(getattr(config, k)) for k in fixed_fields(ProbeConfig)},
        "terms": list(composite.terms),
        "size": composite.size,
        "seed": composite.seed,
        "diswot": __version__,
    }


def _hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def teacher_label(scorer: Scorer) -> str | None:
    """How a scorer's teacher enters a key: its name, or a module's class and architecture
    digest (:func:`~diswot.scoring.teacher.module_label`) and, when its own weights are scored
    (``teacher_init`` keep), their digest; ``None`` without a teacher."""
    spec = scorer.teacher_spec
    if spec is None or isinstance(spec, str):
        return spec
    label = module_label(spec)  # type: ignore[arg-type]  # a module
    if getattr(scorer, "teacher_init", "random") == "keep":
        label += "@" + weights_sha256(spec)[:16]  # type: ignore[arg-type]
    return label


def scorer_key(scorer: Scorer, composite: Composite) -> dict[str, Any]:
    """The key of ``composite``'s sample for ``scorer`` (which must know its space)."""
    space = scorer.space
    if space is None:
        raise DiswotError(
            f"proxy '{composite.name}' ranks its terms against a reference sample of a search "
            "space; pass --space NAME (Python: Scorer(..., space=...))"
        )
    return reference_key(composite, space.name, teacher_label(scorer), scorer.config)


def draw_archs(space: Any, composite: Composite) -> list[str]:
    """The ``K`` reference architectures: the space's own sampling, seeded (repeats allowed)."""
    rng = random.Random(composite.seed)
    return [space.sample(rng) for _ in range(composite.size)]


@dataclass
class ReferenceSample:
    """``K`` architectures and their term values per probe seed (raw, NaN where non-finite).

    Attributes:
        composite: the composite it serves.
        key: what its values depend on (:func:`reference_key`).
        archs: the reference architectures, in draw order.
        values: probe seed -> ``(K, terms)`` float64 array.
    """

    composite: Composite
    key: dict[str, Any]
    archs: list[str]
    values: dict[int, np.ndarray] = field(default_factory=dict)
    _sorted: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def hash(self) -> str:
        """The key's digest: names the cache file and is recorded in ``settings.json``."""
        return _hash(self.key)

    @property
    def size(self) -> int:
        return len(self.archs)

    def columns(self, seed: int) -> list[np.ndarray]:
        """Each term's reference values under ``seed``, oriented and sorted ascending."""
        if seed not in self._sorted:
            if seed not in self.values:
                raise KeyError(f"the {self.composite.name} reference holds no probe seed {seed}")
            v = self.values[seed]
            self._sorted[seed] = [
                np.sort(oriented(v[:, j], s)) for j, s in enumerate(self.composite.signs)
            ]
        return self._sorted[seed]

    def percentiles(self, seed: int, terms: Sequence[float]) -> list[float]:
        """``p_t`` of a network's term values (raw, in term order) under probe seed ``seed``."""
        cols = self.columns(seed)
        return [
            mid_rank_cdf(float(oriented([v], s)[0]), c)
            for v, s, c in zip(terms, self.composite.signs, cols)
        ]

    def aggregate(self, seed: int, terms: Sequence[float]) -> float:
        """The composite's value of a network's term values (raw, in term order)."""
        vals = [float(oriented([v], s)[0]) for v, s in zip(terms, self.composite.signs)]
        return log_cdf_sum(vals, self.columns(seed))

    def value(self, probe: StudentProbe) -> float:
        """The composite's value of one probe: its terms on the probe, ranked against the sample."""
        return self.aggregate(probe.seed, [proxy_value(t, probe) for t in self.composite.terms])

    def settings(self) -> dict[str, Any]:
        """What ``settings.json`` records of the sample."""
        return {"size": self.size, "seed": self.composite.seed, "hash": self.hash, "key": self.key}

    def to_dict(self) -> dict[str, Any]:
        """The cache file's and ``reference.json``'s form (non-finite values as ``null``)."""
        return {
            "format": _FORMAT,
            "name": self.composite.name,
            "terms": list(self.composite.terms),
            "size": self.size,
            "seed": self.composite.seed,
            "hash": self.hash,
            "key": self.key,
            "archs": list(self.archs),
            "values": {
                str(s): [[json_float(float(x)) for x in row] for row in v]
                for s, v in sorted(self.values.items())
            },
        }

    @classmethod
    def from_dict(cls, doc: Any, composite: Composite, key: Mapping[str, Any]) -> ReferenceSample:
        """A sample read back; ``ValueError`` naming what is wrong if it is not ``key``'s."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError("not a reference sample of this format")
        if doc.get("key") != dict(key) or doc.get("hash") != _hash(key):
            raise ValueError("it was built for other settings")
        archs = doc.get("archs")
        k, t = composite.size, len(composite.terms)
        if (
            not isinstance(archs, list)
            or len(archs) != k
            or not all(isinstance(a, str) for a in archs)
        ):
            raise ValueError(f"it does not list {k} architectures")
        values: dict[int, np.ndarray] = {}
        for s, rows in dict(doc.get("values") or {}).items():
            arr = _array(rows, t)
            if arr.shape != (k, t):
                raise ValueError(f"seed {s} holds {arr.shape[0]} rows, not {k}")
            values[int(s)] = arr
        return cls(composite, dict(key), list(archs), values)


def _array(rows: Sequence[Sequence[float | None]], terms: int) -> np.ndarray:
    """Stored rows (``null`` for non-finite) as a ``(rows, terms)`` float64 array."""
    vals = [[math.nan if x is None else float(x) for x in row] for row in rows]
    return np.array(vals, dtype=np.float64).reshape(len(vals), terms)


# -- the cache ------------------------------------------------------------------------------------
def _paths(name: str, digest: str) -> tuple[Path, Path, Path]:
    """The sample, its build journal and its lock file."""
    stem = cache_dir() / "references" / f"{name}-{digest}"
    return stem.with_suffix(".json"), stem.with_suffix(".jsonl"), stem.with_suffix(".lock")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``path`` locked (exclusively) so one process builds while the others wait."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("a")
    except OSError as exc:
        raise DiswotError(
            f"cannot write reference samples in {path.parent} ({exc.strerror}); set DISWOT_CACHE "
            "to a writable folder"
        ) from None
    with fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _note(msg: str) -> None:
    print(f"diswot: note: {msg}", file=sys.stderr)


def _read_cached(
    path: Path, composite: Composite, key: Mapping[str, Any], archs: list[str]
) -> ReferenceSample | None:
    """The cached sample at ``path``, or ``None``: missing, or unreadable/stale (deleted, noted)."""
    if not path.is_file():
        return None
    try:
        sample = ReferenceSample.from_dict(json.loads(path.read_text()), composite, key)
        if sample.archs != archs:
            raise ValueError("the space now draws other architectures")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        _note(f"the reference cache {path} is unusable ({exc}); rebuilding it")
        path.unlink(missing_ok=True)
        return None
    return sample


def _journal(path: Path, archs: list[str], terms: int) -> Journal:
    """The build journal: one ``{seed, index, arch, values}`` record per scored architecture."""

    def check(rec: Any, _i: int) -> bool:
        i = rec["index"]
        return (
            isinstance(rec["seed"], int)
            and isinstance(i, int)
            and 0 <= i < len(archs)
            and rec["arch"] == archs[i]
            and isinstance(rec["values"], list)
            and len(rec["values"]) == terms
            and all(v is None or isinstance(v, (int, float)) for v in rec["values"])
        )

    return Journal(path, check=check, fix="delete the file to rebuild the reference")


def load_reference(
    scorer: Scorer, composite: Composite | str, seeds: Iterable[int]
) -> ReferenceSample:
    """``composite``'s sample for ``scorer``, holding every seed of ``seeds``: read from the cache,
    else built (or completed) there with ``scorer`` and cached."""
    comp = get_composite(composite) if isinstance(composite, str) else composite
    key = scorer_key(scorer, comp)
    archs = draw_archs(scorer.space, comp)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    path, journal_path, lock = _paths(comp.name, _hash(key))
    sample = _read_cached(path, comp, key, archs)
    if sample is not None and all(s in sample.values for s in seeds):
        return sample
    with _locked(lock):
        # Another process may have built it while this one waited for the lock.
        sample = _read_cached(path, comp, key, archs) or ReferenceSample(comp, key, archs)
        missing = [s for s in seeds if s not in sample.values]
        if missing:
            _build(scorer, sample, missing, journal_path)
            atomic_write_json(path, sample.to_dict())
            journal_path.unlink(missing_ok=True)
    return sample


def _build(scorer: Scorer, sample: ReferenceSample, seeds: list[int], journal_path: Path) -> None:
    """Score ``sample``'s architectures under ``seeds`` into it, resuming from the journal."""
    comp = sample.composite
    journal = _journal(journal_path, sample.archs, len(comp.terms))
    try:
        records = journal.read()
    except DiswotError as exc:
        _note(f"{exc.args[0].split(';')[0]}; rebuilding the reference")
        journal_path.unlink(missing_ok=True)
        records = []
    done = {(r["seed"], r["index"]): r["values"] for r in records}
    todo = sum((s, i) not in done for s in seeds for i in range(sample.size))
    if todo:
        _note(
            f"scoring the {comp.name} reference sample: {todo} evaluations of {sample.size} "
            f"{sample.key['space']} architectures x {len(seeds)} seed(s) "
            f"({', '.join(comp.terms)}), cached in {journal_path.with_suffix('.json')}"
        )
    # On a terminal only (tqdm's disable=None): logs and captured output get the note alone.
    with journal, tqdm(total=todo, desc=f"{comp.name} reference", unit="arch", disable=None) as bar:
        for s in seeds:
            rows = []
            for i, arch in enumerate(sample.archs):
                row = done.get((s, i))
                if row is None:
                    vals = scorer.evaluate(arch, comp.terms, s)
                    row = [json_float(vals[t]) for t in comp.terms]
                    journal.append({"seed": s, "index": i, "arch": arch, "values": row})
                    bar.update()
                rows.append(row)
            sample.values[s] = _array(rows, len(comp.terms))
            sample._sorted.pop(s, None)


# -- run folders ----------------------------------------------------------------------------------
def reference_settings(samples: Mapping[str, ReferenceSample]) -> dict[str, dict] | None:
    """``settings.json``'s ``references``: per composite, its size, seed, hash and key."""
    return {n: s.settings() for n, s in samples.items()} or None


def write_references(out: str | Path, samples: Mapping[str, ReferenceSample]) -> None:
    """Copy the samples a run used into its folder (``reference.json``), with those already there."""
    if not samples:
        return
    path = Path(out) / REFERENCE
    docs = read_references(out)
    docs.update({n: s.to_dict() for n, s in samples.items()})
    atomic_write_json(path, docs)


def copy_references(src: str | Path, dst: str | Path) -> None:
    """Add run folder ``src``'s samples to ``dst``'s ``reference.json`` (merged shards)."""
    docs = read_references(src)
    if docs:
        atomic_write_json(Path(dst) / REFERENCE, {**read_references(dst), **docs})


def read_references(out: str | Path) -> dict[str, Any]:
    """A run folder's ``reference.json`` (``{}`` when it has none or it is unreadable)."""
    path = Path(out) / REFERENCE
    try:
        docs = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return docs if isinstance(docs, dict) else {}


def install_references(out: str | Path) -> None:
    """Put a run folder's samples back in the cache where the cache lacks them, so a resumed run
    reads the very samples it started with instead of scoring them again."""
    for name, doc in read_references(out).items():
        if not isinstance(doc, dict) or not isinstance(doc.get("hash"), str):
            continue
        path, _, lock = _paths(str(name), doc["hash"])
        if path.is_file():
            continue
        with _locked(lock):
            if not path.is_file():
                atomic_write_json(path, doc)


def recorded_references(out: str | Path | None) -> dict[str, Any]:
    """The ``references`` a run folder's ``settings.json`` records (``{}`` for none)."""
    if out is None:
        return {}
    try:
        meta = json.loads((Path(out) / SETTINGS).read_text())
        return dict(meta["settings"].get("references") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def run_references(
    scorer: Scorer | None, names: Iterable[str], out: str | Path | None
) -> dict[str, ReferenceSample]:
    """The samples of the composites among ``names`` that a run scores against, ready before its
    first candidate: the run folder's copies (a resumed run) go back in the cache first, and the
    samples its ``settings.json`` records must be the ones in use."""
    composites = [n for n in dict.fromkeys(names) if get_proxy(n).needs_space]
    if not composites or scorer is None:
        return {}
    if out is not None:
        install_references(out)
    samples = {n: scorer.reference(n) for n in composites}
    if out is not None:
        check_references(out, recorded_references(out), reference_settings(samples))
    return samples


def check_references(
    out: str | Path, recorded: Mapping[str, Any] | None, now: Mapping[str, Any] | None
) -> None:
    """Refuse to continue a run folder whose composites were scored against other samples."""
    old, new = dict(recorded or {}), dict(now or {})
    for name in old.keys() & new.keys():
        if old[name].get("hash") != new[name].get("hash"):
            before, after = old[name].get("key") or {}, new[name].get("key") or {}
            what = [k for k in after if before.get(k) != after.get(k)] or ["its key"]
            raise DiswotError(
                f"{out} scored {name} against a reference sample with other {', '.join(what)} "
                f"(hash {old[name].get('hash')}, now {new[name].get('hash')}); use another --out"
            )
