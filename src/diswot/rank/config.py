"""The settings of a rank run, declared once: defaults, ``settings.json`` and the resume rule.

A run folder caches scores per (architecture, seed, proxy), so a rerun may add proxies and seeds
(``resume="grow"``) or change what does not change a score (``"free"``: device, engine, the sample,
the targets of the same dataset), but must share every setting a score depends on (``"fixed"``).
The probe settings take their defaults and help from :class:`~diswot.config.ProbeConfig`, so
``rank`` and ``score`` cannot drift apart. Field order is the key order of ``settings.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from diswot.config import ProbeConfig, Resume, defaults, fixed_fields, help_text, setting

_PROBE = defaults(ProbeConfig)


def _probe(name: str, resume: Resume = "fixed") -> Any:
    """A field with the probe setting's default and help."""
    return setting(_PROBE[name], resume=resume, help=help_text(ProbeConfig, name))


@dataclasses.dataclass(frozen=True)
class RankConfig:
    """What a rank run records in ``settings.json``, as resolved from the request (the teacher by
    name, the targets and their dataset's class count and resolution, the proxies with the
    baselines added)."""

    space: str = setting("s1", help="search space: s1, nb201, ...")
    teacher: str | None = setting(None, help="teacher model name; None ranks teacher-free proxies")
    targets: tuple[str, ...] = setting(
        (), resume="free", help="ground-truth targets, all of one dataset"
    )
    num_classes: int = _probe("num_classes")
    image_size: int = _probe("image_size")
    batch_size: int = _probe("batch_size")
    seeds: tuple[int, ...] = _probe("seeds", "grow")
    init: str = _probe("init")
    data: str = _probe("data")
    device: str = _probe("device", "free")
    precision: str = _probe("precision")
    # Recorded, not compared: every engine gives the same scores (tests/test_supernet.py).
    engine: str = _probe("engine", "free")
    sample: int | None = setting(None, resume="free", help="seeded sample size (None: the space's)")
    sample_seed: int = setting(0, resume="free", help="seed of the sample")
    n_archs: int = setting(0, resume="free", help="architectures ranked (before sharding)")
    proxies: tuple[str, ...] = setting(
        ("default", "diswot", "ms", "mr"), resume="grow", help="proxies scored (the baselines always)"
    )
    ensembles: Mapping[str, tuple[str, ...]] | None = setting(
        None, resume="grow", help="rank-average ensembles, name -> members"
    )
    shard: tuple[int, int] | None = setting(None, resume="free", help="(i, n): every n-th from i")
    # Recorded for the record, not compared (a moved dataset is the same data).
    data_root: str | None = _probe("data_root", "free")
    # The teacher's weights (diswot.scoring.teacher.WEIGHT_SETTINGS), added after the fields above.
    teacher_ckpt: str | None = setting(
        None,
        resume="free",
        help="the trained teacher's checkpoint (moved, the same digest resumes)",
    )
    teacher_sha256: str | None = setting(None, help="SHA-256 of the teacher checkpoint file")
    teacher_init: str = setting(
        "random", help="keep: the teacher's trained weights; random: re-initialised (the paper's)"
    )
    # Grows with the composites named; each one's hash is checked on its own on resume
    # (diswot.scoring.reference.check_references): a composite's scores need the same sample.
    references: Mapping[str, Mapping] | None = setting(
        None, resume="grow", help="reference samples of composite proxies: size, seed, hash, key"
    )


#: Settings that change scores: a run folder refuses to mix runs that differ in any of them.
FIXED_SETTINGS: tuple[str, ...] = fixed_fields(RankConfig)

__all__ = ["FIXED_SETTINGS", "RankConfig"]
