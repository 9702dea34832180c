"""A search's settings, declared once: ``settings.json``'s keys, what a resume must match, defaults.

:class:`SearchConfig` is the ``settings`` object of a search's ``settings.json``, field for field and
in the same order (:func:`diswot.config.to_settings` writes it). Each field's ``resume`` rule says
whether a resumed run must share it (``fixed``), may change it (``free``: where or how fast it runs,
the engine, which gives the same scores) or may raise it (``grow``: ``cycles``). The CLI's fallbacks
come from the same defaults.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from diswot import runfolder
from diswot.config import defaults, fixed_fields, setting
from diswot.spaces import SearchSpace

#: Scored candidates of an evolution or random search when ``--cycles`` is not given (the paper's
#: 1,000 on NB201); an exhaustive search scores every admissible student instead.
DEFAULT_CYCLES = 1000

#: Spaces of at most this many archs default to exhaustive search (S1: 64 students).
EXHAUSTIVE_UP_TO = 1000


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything a search's candidates depend on, plus where and how it ran."""

    space: str = setting("nb201", help="registered search space")
    target: str | None = setting(None, help="dataset target fixing classes and resolution")
    num_classes: int = setting(100, help="classes of the teacher and the students")
    image_size: int = setting(32, help="probe resolution")
    teacher: str | None = setting(
        None, help="teacher model name, or a module's class and architecture digest"
    )
    objective: str = setting(
        "default", help="the proxy maximised ('default': the default rule's, docs/default_objective.md)"
    )
    algorithm: str | None = setting(None, help="evolution, random or exhaustive")
    seed: int = setting(0, help="the search's RNG seed (independent of the probe seeds)")
    cycles: int | None = setting(
        None, resume="grow", help="scored candidates (exhaustive: at most this many)"
    )
    population: int = setting(36, help="aging evolution's population (the paper's 36)")
    sample_size: int = setting(8, help="aging evolution's tournament size (the paper's 8)")
    crossover_prob: float = setting(0.0, help="chance a child crosses two tournament winners")
    budget: dict[str, int | None] | None = setting(
        None, help="inclusive bounds max_params, max_flops, min_params, min_flops"
    )
    batch_size: int = setting(64, help="probe batch size")
    probe_seeds: tuple[int, ...] = setting((0,), help="probe seeds the proxy is averaged over")
    init: str = setting("gaussian", help="gaussian (the paper's N(0,1)) or default (PyTorch's)")
    data: str = setting("synthetic", help="synthetic, cifar10 or cifar100")
    data_root: str | None = setting(
        None, resume="free", help="folder of the dataset (a moved dataset may be pointed at anew)"
    )
    device: str = setting("cpu", resume="free", help="where candidates are scored")
    flop_convention: str = setting("macs", help="the space's FLOP-counting convention")
    precision: str = setting("fp32", help="dtype of the students' forward pass")
    engine: str = setting("auto", resume="free", help="every engine gives the same scores")
    in_flight: int = setting(
        1,
        resume="free",
        help="candidates scored at once; it shapes the proposals, so a resume keeps the recorded "
        "number and refuses another one asked for explicitly (its own message)",
    )
    workers: int = setting(1, resume="free", help="processes or Ray actors scoring candidates")
    group: int = setting(
        1,
        resume="free",
        help="candidates scored in one pass (diswot.scoring.group); the same scores, so a resume "
        "may change it (the proposals follow in_flight)",
    )
    backend: str = setting("local", resume="free", help="local or ray")
    # The teacher's weights (diswot.scoring.teacher.WEIGHT_SETTINGS), added after the fields above.
    teacher_ckpt: str | None = setting(
        None,
        resume="free",
        help="the trained teacher's checkpoint (moved, the same digest resumes)",
    )
    teacher_sha256: str | None = setting(
        None, help="SHA-256 of the teacher checkpoint file, or of a teacher module's kept weights"
    )
    teacher_init: str = setting(
        "random", help="keep: the teacher's trained weights; random: re-initialised (the paper's)"
    )
    # Checked by hash on resume (diswot.scoring.reference.check_references), not by this rule: the
    # samples are known only once the scorer is built, after the folder check.
    references: dict[str, dict] | None = setting(
        None,
        resume="free",
        help="reference samples of a composite objective: size, seed, hash and key",
    )


#: The settings a resumed run must share with the run it continues.
FIXED_SETTINGS: tuple[str, ...] = fixed_fields(SearchConfig)

#: Every setting's default (the CLI's fallbacks, run_search's keyword defaults).
DEFAULTS: dict[str, Any] = defaults(SearchConfig)
DEFAULT_POPULATION: int = DEFAULTS["population"]
DEFAULT_SAMPLE_SIZE: int = DEFAULTS["sample_size"]


def read_settings(out_dir: str | Path) -> dict:
    """The settings stored in a search's run folder (what ``--resume DIR`` fills options from)."""
    return runfolder.read_settings(out_dir, "search run")


def default_algorithm(space: SearchSpace) -> str:
    """Exhaustive for small enumerable spaces (S1), aging evolution otherwise."""
    n = space.size()
    return "exhaustive" if n is not None and n <= EXHAUSTIVE_UP_TO else "evolution"


def default_out_dir(space: str) -> Path:
    """``runs/search-<space>-<timestamp>``: a new folder for every run started without ``--out``.

    A user's space spec becomes one folder name, not a path: ``path/to/x.py:Name`` gives
    ``search-x.py-Name-<timestamp>`` (the file's name, then the object's), and any other character
    a file name should not hold becomes ``_``.
    """
    where, colon, obj = space.rpartition(":")
    slug = f"{Path(where).name}-{obj}" if colon and where else space
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", slug).strip("._") or "space"
    return Path("runs") / f"search-{slug}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


__all__ = [
    "DEFAULTS",
    "DEFAULT_CYCLES",
    "DEFAULT_POPULATION",
    "DEFAULT_SAMPLE_SIZE",
    "EXHAUSTIVE_UP_TO",
    "FIXED_SETTINGS",
    "SearchConfig",
    "default_algorithm",
    "default_out_dir",
    "read_settings",
]
