"""Ground truth shipped inside the package, so rank correlations need no downloads.

Tables (all under ``diswot/_data``, built from the public reference files by :func:`build_package_data`):

* **S1** (DisWOT paper): CIFAR-100 top-1 of the 64 CIFAR ResNets ``code`` = blocks per stage, digits
  in {1,3,5,7} (``"333"`` is ResNet20), after knowledge distillation (``kd``) and after plain training
  (``cls``, alias ``vanilla``). :func:`s1_accuracy`.
* **NAS-Bench-201**: 200-epoch test accuracy (percent) of all 15,625 cells on CIFAR-10, CIFAR-100 and
  ImageNet16-120, keyed by the NB201 arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
  :func:`nb201_accuracy`, :func:`nb201_archs`, :func:`nb201_sample`.
* **NASLib zero-cost scores** for 725 NB201 cells (724 on ImageNet16-120): every proxy's ``score``
  plus ``val_accuracy``, keyed by NASLib tuple. :func:`naslib_scores`.
* **Zen-scores** of all 15,625 cells per dataset, re-keyed to NB201 arch strings. :func:`zen_scores`.

NASLib tuples ``(t0..t5)`` hold op indices on edges 1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2 (0
skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1, 4 avg_pool_3x3); :func:`naslib_to_arch` and
:func:`arch_to_naslib` convert. (The edge order was checked: NASLib ``val_accuracy`` correlates with
the NB201 test accuracy at Pearson > 0.98 under this mapping and < 0.65 under the naive order.)

Parsed tables are cached; every public function returns a fresh container, so callers may mutate it.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from diswot.errors import DiswotError
from diswot.models.nb201 import NASLIB_OPS, arch_to_naslib, naslib_to_arch  # noqa: F401 (re-exported)

# The converters live with the NB201 model (one definition); re-exported here for data users.
NB201_OPS = NASLIB_OPS
NB201_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
NB201_SIZE = 15625
S1_TARGETS: tuple[str, ...] = ("kd", "cls")
SPACES: tuple[str, ...] = ("s1", "nb201")

_S1_FILES = {"kd": "s1-gt-kd.txt", "cls": "s1-gt-cls.txt"}
_NB201_FILE = "nb201_acc.csv.gz"
_NASLIB_FILE = "naslib_zc_nb201_725.json.gz"
_ZEN_FILE = "nb201_zen.csv.gz"


def _read_bytes(name: str) -> bytes:
    data = resources.files("diswot").joinpath("_data", name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def _nb201_dataset(dataset: str) -> str:
    key = str(dataset).lower().replace("_", "-")
    aliases = {
        "cifar10": "cifar10",
        "cifar-10": "cifar10",
        "cifar100": "cifar100",
        "cifar-100": "cifar100",
        "imagenet16-120": "ImageNet16-120",
        "imagenet16": "ImageNet16-120",
        "imagenet": "ImageNet16-120",
    }
    if key not in aliases:
        raise DiswotError(
            f"unknown NB201 dataset '{dataset}'; accepted: cifar10, cifar100, ImageNet16-120"
        )
    return aliases[key]


# --------------------------------------------------------------------------- S1


@functools.cache
def _s1_table(target: str) -> tuple[tuple[str, float], ...]:
    rows = []
    for line in _read_bytes(_S1_FILES[target]).decode().splitlines():
        if line.strip():
            code, acc = line.split()
            rows.append((code, float(acc)))
    return tuple(rows)


def _s1_target(target: str) -> str:
    key = str(target).lower()
    key = "cls" if key == "vanilla" else key
    if key not in _S1_FILES:
        raise DiswotError(f"unknown S1 target '{target}'; accepted: kd, cls (alias vanilla)")
    return key


def s1_accuracy(target: str = "kd") -> dict[str, float]:
    """S1 code (e.g. ``"333"``) -> CIFAR-100 top-1 (percent) after KD (``kd``) or plain training."""
    return dict(_s1_table(_s1_target(target)))


# --------------------------------------------------------------------------- NB201 accuracy


@functools.cache
def _nb201_table() -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    reader = csv.reader(io.StringIO(_read_bytes(_NB201_FILE).decode()))
    header = next(reader)
    rows = list(reader)
    archs = tuple(r[0] for r in rows)
    cols = {name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(header) if i}
    return archs, cols


def nb201_archs() -> list[str]:
    """All 15,625 NB201 arch strings, in the order of the source CSV (fixed, so samples are stable)."""
    return list(_nb201_table()[0])


def nb201_accuracy(dataset: str) -> dict[str, float]:
    """NB201 arch string -> 200-epoch test accuracy (percent) on ``cifar10``, ``cifar100`` or
    ``ImageNet16-120`` (case-insensitive; ``imagenet16`` accepted)."""
    archs, cols = _nb201_table()
    return dict(zip(archs, cols[_nb201_dataset(dataset)].tolist()))


def nb201_sample(n: int, seed: int) -> list[str]:
    """``n`` distinct NB201 arch strings, drawn with ``numpy.random.default_rng(seed)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= NB201_SIZE:
        raise DiswotError(f"NB201 sample size must be an integer in 0..{NB201_SIZE}, got {n!r}")
    archs = _nb201_table()[0]
    idx = np.random.default_rng(int(seed)).choice(len(archs), size=int(n), replace=False)
    return [archs[i] for i in idx]


# --------------------------------------------------------------------------- NASLib / Zen


@functools.cache
def _naslib_table() -> dict[str, dict[str, dict[str, float]]]:
    return json.loads(_read_bytes(_NASLIB_FILE))


def naslib_scores(dataset: str) -> dict[tuple[int, ...], dict[str, float]]:
    """NASLib tuple -> ``{proxy: score, ..., "val_accuracy": acc}`` for NASLib's 725-cell sample.

    Proxies: flops, params, snip, jacov, grad_norm, plain, epe_nas, fisher, grasp, l2_norm, synflow,
    nwot - as NASLib computed them (one cifar10 cell lacks ``synflow``; one ``nwot`` is ``-inf``).
    ``val_accuracy`` is NASLib's validation accuracy (cifar10-valid split for cifar10).
    """
    table = _naslib_table()[_nb201_dataset(dataset)]
    return {tuple(int(c) for c in key): dict(vals) for key, vals in table.items()}


@functools.cache
def _zen_table() -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    reader = csv.reader(io.StringIO(_read_bytes(_ZEN_FILE).decode()))
    header = next(reader)
    rows = list(reader)
    archs = tuple(naslib_to_arch(tuple(int(c) for c in r[0])) for r in rows)
    cols = {name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(header) if i}
    return archs, cols


def zen_scores(dataset: str) -> dict[str, float]:
    """NB201 arch string -> Zen-score for all 15,625 cells (from NASLib's ``nb201_zen.zip``).

    The source file keys cells by NASLib tuple; they are converted to NB201 arch strings here so the
    keys match :func:`nb201_accuracy`. Values are kept as published: the 341 cells whose input cannot
    reach the output carry NASLib's sentinel ``-1e8`` (already the lowest score, so ranking is right).
    """
    archs, cols = _zen_table()
    return dict(zip(archs, cols[_nb201_dataset(dataset)].tolist()))


# --------------------------------------------------------------------------- dispatch


def _space(space: str) -> str:
    key = str(space).lower().replace("-", "")
    key = {"nasbench201": "nb201", "natsbench": "nb201"}.get(key, key)
    if key not in SPACES:
        raise DiswotError(f"no ground truth for space '{space}'; accepted: {', '.join(SPACES)}")
    return key


def targets(space: str) -> list[str]:
    """The ground-truth targets a space has: S1 ``kd``/``cls``; NB201 its three datasets."""
    return list(S1_TARGETS) if _space(space) == "s1" else list(NB201_DATASETS)


def ground_truth(space: str, target: str) -> dict[str, float]:
    """Architecture key -> accuracy (percent) for ``space`` (``s1`` | ``nb201``) and ``target``."""
    key = _space(space)
    try:
        return s1_accuracy(target) if key == "s1" else nb201_accuracy(target)
    except DiswotError:
        raise DiswotError(
            f"unknown {key} target '{target}'; accepted: {', '.join(targets(key))}"
        ) from None


# --------------------------------------------------------------------------- data build


def _gzip(text: str) -> bytes:
    # mtime=0 keeps the archive byte-identical across rebuilds.
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def build_package_data(src: str | Path, dst: str | Path) -> list[Path]:
    """Rebuild the shipped tables in ``dst`` from the reference data folder ``src``.

    ``src`` is laid out like the project's shared data (``diswot-s1-kd/``, ``nb201-test-acc/``,
    ``naslib-zc-nb201/``). Numbers are copied as their exact decimal text or float repr; only unused
    columns (per-proxy timings, NASLib indices, the isomorphism string) are dropped. Deterministic:
    the same input gives byte-identical files. Returns the written paths.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}

    for name in _S1_FILES.values():
        out[name] = (src / "diswot-s1-kd" / name).read_bytes()

    with (src / "nb201-test-acc" / "nats_bench.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = (
        "CIFAR10TestAccuracy200Epochs",
        "CIFAR100TestAccuracy200Epochs",
        "ImageNetTestAccuracy200Epochs",
    )
    lines = ["arch," + ",".join(NB201_DATASETS)]
    lines += [",".join([r["ArchitectureString"], *(r[c] for c in cols)]) for r in rows]
    out[_NB201_FILE] = _gzip("\n".join(lines) + "\n")

    raw = json.loads((src / "naslib-zc-nb201" / "zc_nasbench201_725archs.json").read_text())
    compact = {
        ds: {
            "".join(str(int(t)) for t in json.loads(key.replace("(", "[").replace(")", "]"))): {
                k: (v["score"] if isinstance(v, dict) else v)
                for k, v in sorted(rec.items())
                if k not in ("idx", "arch")
            }
            for key, rec in sorted(raw[ds].items())
        }
        for ds in NB201_DATASETS
    }
    out[_NASLIB_FILE] = _gzip(json.dumps(compact, separators=(",", ":"), sort_keys=True))

    zen: dict[str, dict[str, float]] = {}
    with zipfile.ZipFile(src / "naslib-zc-nb201" / "nb201_zen.zip") as zf:
        for info in zf.infolist():
            parts = Path(info.filename).stem.split("--")
            if len(parts) != 4 or parts[2] not in NB201_DATASETS:
                continue
            for rec in json.loads(zf.read(info)):
                key = "".join(c for c in rec["arch"] if c.isdigit())
                zen.setdefault(key, {})[parts[2]] = rec["zen"]["score"]
    lines = ["naslib," + ",".join(NB201_DATASETS)]
    lines += [",".join([k, *(repr(float(zen[k][d])) for d in NB201_DATASETS)]) for k in sorted(zen)]
    out[_ZEN_FILE] = _gzip("\n".join(lines) + "\n")

    written = []
    for name, blob in out.items():
        (dst / name).write_bytes(blob)
        written.append(dst / name)
    return written
