"""Teacher-aware terms next to the default proxy (ZiCo): designed on S1, judged on the ViTs.

Issue 17, item 3. Every term compares the randomly initialised teacher with the student on the
probe batch (one forward of each; no backward pass): the registered distillation proxies
(``diswot``, ``ms``, ``mr``, ``kd``, ``x-cka``, ``sp``, ``rkd``, ``ickd``, ``at``) and three cheap
ones defined here (:data:`CUSTOM`): linear CKA between the teacher's and the student's pooled
features (``pool_cka``), between their logits (``logit_cka``), and between their classifiers'
closed-form cross-entropy gradients with the classes as samples (``grad_cka``: do the two
classifiers' gradients relate the classes alike?).

Measure (resumable: one line per (student, seed) is appended to
``benchmarks/results/teacher-terms/<job>.jsonl`` as it is computed; a rerun computes only what is
missing)::

    OMP_NUM_THREADS=1 python benchmarks/teacher_terms.py score --job s1 --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/teacher_terms.py score --job pit --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/teacher_terms.py score --job autoformer --seeds 0

and report (reads the JSONL files and the cached ZiCo scores; runs in seconds)::

    python benchmarks/teacher_terms.py report [--s1-seeds 0 1 2] [--vit-seeds 0]

Set-ups: ``s1`` is the 64 S1 students against a random ``resnet110`` (batch 64, 32 px,
``Scorer.for_space``); ZiCo is scored here too for every seed (it is teacher-free; its seed-0 values
are checked against ``benchmarks/results/sota/s1.jsonl``). ``pit`` and ``autoformer`` are the ViT
students with CIFAR-100 KD accuracy, scored exactly as ``benchmarks/vit_rank.py`` does (its
``_scorer``: a random CIFAR ResNet-56 teacher seeing the probe at 32 px, the student at 224 px,
batch 16, the class-relation semantic form); their ZiCo values are read from
``benchmarks/results/vit-sota/<space>-c100-b16/scores.jsonl`` (seed 0, the same scorer; other
seeds are scored here). The ViT students are scored in a fixed random order
(``numpy.random.default_rng(0)``), so a run cut short leaves a seeded random subsample; the report
says how many students each figure rests on.

The rule, fixed before any ViT number was computed:

* **Design on S1 only.** Each term ``t`` is combined with ZiCo by ranks within the evaluated set,
  ``log(r_zico / N) + w * log(r_t / N)`` (mid-ranks, a missing value ranks lowest; values are first
  averaged over the probe seeds). The orientation ``s`` of the term (its registered one, or the
  opposite) and ``w`` in :data:`WEIGHTS` are the pair with the best Kendall against S1 KD accuracy
  (ties: the registered orientation, then the smaller ``w``).
* **Judge on the ViTs.** A term is kept only if its designed combination beats ZiCo alone on S1
  KD (the design improved) *and* on the mean Kendall of the two held-out targets, PiT and
  AutoFormer CIFAR-100 KD accuracy.
* Twelve terms judged one by one are twelve chances for one to pass by luck, so the report also
  names the **S1 design pick**, the single combination with the best S1 KD Kendall (ties: the
  earlier term in :data:`TERMS`), and judges it alone: that is the one candidate for the default.
* ``zico + params`` (:data:`CONTROLS`) is designed and shown the same way but is never kept: it
  asks whether a teacher term adds more than size does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from diswot import bench, rankstats
from diswot.proxies import get_proxy
from diswot.proxies.diswotx import centred_gram, linear_cka
from diswot.runfolder import Journal, json_float
from diswot.scoring import Scorer, StudentProbe, proxy_value
from diswot.spaces import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vit_rank import _scorer as vit_scorer  # noqa: E402  (the ViT set-up, shared on purpose)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "teacher-terms"
SOTA = ROOT / "benchmarks" / "results" / "sota" / "s1.jsonl"
VIT_SOTA = ROOT / "benchmarks" / "results" / "vit-sota"

#: Registered teacher-aware proxies (lower is better for the losses: see their ``sign``).
REGISTERED = ("diswot", "ms", "mr", "kd", "x-cka", "sp", "rkd", "ickd", "at")
#: Orientation weights tried in the design step (S1 only).
WEIGHTS = (0.25, 0.5, 1.0, 2.0)
#: Seed of the fixed order the ViT students are scored in (a prefix is a random subsample).
ORDER_SEED = 0
S1_BATCH = 64
VIT_BATCH = 16


def _pooled_teacher(probe: StudentProbe) -> torch.Tensor:
    """The teacher's classifier input: its pre-pool map averaged over positions (a CIFAR ResNet)."""
    return probe.teacher.derived("pooled", lambda t: t.feature_map.detach().double().mean((2, 3)))


def pool_cka(probe: StudentProbe) -> float:
    """Linear CKA of the teacher's and the student's pooled features (the classifier inputs)."""
    t = probe.teacher.derived("pooled_gram", lambda _t: centred_gram(_pooled_teacher(probe)))
    return linear_cka(t, centred_gram(probe.features.pooled))


def logit_cka(probe: StudentProbe) -> float:
    """Linear CKA of the teacher's and the student's logits on the probe batch."""
    t = probe.teacher.derived("logit_gram", lambda _t: centred_gram(_t.logits))
    return linear_cka(t, centred_gram(probe.features.logits))


def grad_cka(probe: StudentProbe) -> float:
    """Linear CKA of the two classifiers' closed-form gradients, classes as samples (K x K)."""
    t = probe.teacher.derived("grad_gram", lambda _t: centred_gram(_t.grad))
    return linear_cka(t, centred_gram(probe.grad))


#: Terms defined here: name -> (function, higher is better).
CUSTOM: dict[str, tuple[Callable[[StudentProbe], float], bool]] = {
    "pool_cka": (pool_cka, True),
    "logit_cka": (logit_cka, True),
    "grad_cka": (grad_cka, True),
}
TERMS = (*REGISTERED, *CUSTOM)
#: Teacher-free controls, designed and reported the same way but never kept: does a teacher term
#: add more than size does?
CONTROLS = ("params",)


def sign(term: str) -> float:
    """The a-priori orientation of a term: +1 if larger should mean a better student."""
    if term in CUSTOM:
        return 1.0 if CUSTOM[term][1] else -1.0
    if term in CONTROLS:
        return 1.0
    return float(get_proxy(term).sign)


# ------------------------------------------------------------------------------------ measure


def make_scorer(job: str, seeds: list[int]) -> tuple[Scorer, list[str]]:
    """The scorer of a job and its students (ViT students in the fixed random order)."""
    if job == "s1":
        scorer = Scorer.for_space(
            get_space("s1"), "resnet110", num_classes=100, batch_size=S1_BATCH, seeds=seeds
        )
        return scorer, sorted(bench.s1_accuracy("kd"))
    space = get_space(job)
    truth = space.ground_truth("c100_kd")
    archs = [a for a in space.rank_archs() if a in truth]
    order = np.random.default_rng(ORDER_SEED).permutation(len(archs))
    return vit_scorer(job, "c100", VIT_BATCH, seeds), [archs[i] for i in order]


def measure_one(scorer: Scorer, arch: str, seed: int, job: str) -> dict:
    probe = scorer.probe(arch, seed)
    values: dict[str, float] = {}
    t0 = time.perf_counter()
    for term in REGISTERED:
        values[term] = proxy_value(term, probe)
    for term, (fn, _) in CUSTOM.items():
        try:
            values[term] = float(fn(probe))
        except (RuntimeError, ValueError, FloatingPointError, ZeroDivisionError):
            values[term] = math.nan
    seconds = time.perf_counter() - t0
    if job == "s1" or seed != 0:  # the ViTs' cached ZiCo holds seed 0 only
        values["zico"] = proxy_value("zico", probe)
    return {
        "arch": arch,
        "seed": seed,
        "values": {k: json_float(v) for k, v in values.items()},
        "seconds": seconds,
    }


def score(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    journal = Journal(OUT / f"{args.job}.jsonl")
    done = {(r["arch"], r["seed"]) for r in journal.read()}
    scorer, archs = make_scorer(args.job, args.seeds)
    if args.limit:
        archs = archs[: args.limit]
    todo = [(a, s) for a in archs for s in args.seeds if (a, s) not in done]
    t0 = time.perf_counter()
    for s in args.seeds:
        scorer.teacher(s)
    print(f"{args.job}: teacher {time.perf_counter() - t0:.1f} s; {len(todo)} to score", flush=True)
    with journal:
        for i, (arch, s) in enumerate(todo):
            rec = measure_one(scorer, arch, s, args.job)
            journal.append(rec)
            print(
                f"[{i + 1}/{len(todo)}] {arch} seed {s}: {rec['seconds']:.2f} s "
                f"(elapsed {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


# ------------------------------------------------------------------------------------- report


def _per_seed(records: list[dict]) -> dict[str, dict[str, list[float]]]:
    """term -> arch -> values over seeds (None read as NaN)."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for k, v in r["values"].items():
            out.setdefault(k, {}).setdefault(r["arch"], []).append(
                math.nan if v is None else float(v)
            )
    return out


def _vit_zico(space: str) -> dict[str, float]:
    path = VIT_SOTA / f"{space}-c100-b{VIT_BATCH}" / "scores.jsonl"
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        v = r["values"].get("zico")
        if r["seed"] == 0 and v is not None:
            out[r["arch"]] = float(v)
    return out


def load_job(
    job: str, only: list[int] | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], int]:
    """(term -> arch -> seed-mean value, target -> arch -> accuracy, seeds) of a scored job,
    over the seeds in ``only`` (every seed scored if ``None``)."""
    path = OUT / f"{job}.jsonl"
    records = Journal(path).read() if path.exists() else []
    if only is not None:
        records = [r for r in records if r["seed"] in only]
    if job != "s1":  # seed 0's ZiCo from the vit-sota cache (same scorer), where not scored here
        zico = _vit_zico(job)
        for r in records:
            if r["seed"] == 0 and r["values"].get("zico") is None and r["arch"] in zico:
                r["values"]["zico"] = zico[r["arch"]]
    seeds = sorted({r["seed"] for r in records})
    per = _per_seed(records)
    n_seeds = {a: len(v) for a, v in per.get(TERMS[0], {}).items()}
    full = {a for a, n in n_seeds.items() if n == len(seeds)}
    values = {
        t: {
            a: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            for a, v in per[t].items()
            if a in full
        }
        for t in per
    }
    if job == "s1":
        kd, cls = bench.s1_accuracy("kd"), bench.s1_accuracy("cls")
        targets = {
            "S1 KD": kd,
            "S1 gain": {a: kd[a] - cls[a] for a in kd},
            "S1 plain": cls,
        }
    else:
        name = {"pit": "PiT KD", "autoformer": "AutoFormer KD"}[job]
        targets = {name: get_space(job).ground_truth("c100_kd")}
    size = (100, 32) if job == "s1" else (100, 224)
    space = get_space(job)
    values["params"] = {a: float(space.cost(a, *size).params) for a in full}
    return values, targets, len(seeds)


def log_ranks(x: np.ndarray) -> np.ndarray:
    """``log(mid-rank / N)``, larger values ranking higher; NaN ranks lowest."""
    x = np.where(np.isfinite(x), x, -np.inf)
    return np.log(rankdata(x, method="average") / len(x))


def combined(zico: np.ndarray, term: np.ndarray, s: float, w: float) -> np.ndarray:
    return log_ranks(zico) + w * log_ranks(s * term)


def check_zico() -> str:
    """How the S1 ZiCo scored here (seed 0) compares with the cached sota run."""
    rows = Journal(SOTA).read() if SOTA.exists() else []
    cached = {r["arch"]: r["values"]["zico"] for r in rows if "zico" in r["values"]}
    recs = Journal(OUT / "s1.jsonl").read()
    mine = {r["arch"]: r["values"].get("zico") for r in recs if r["seed"] == 0}
    common = [a for a in mine if a in cached and mine[a] is not None]
    if not common:
        return "no cached S1 ZiCo to compare"
    rel = max(abs(mine[a] - cached[a]) / abs(cached[a]) for a in common)
    return (
        f"S1 ZiCo seed 0 vs benchmarks/results/sota/s1.jsonl: max relative difference {rel:.2e} "
        f"over {len(common)} students"
    )


#: What is ranked: ``(term, orientation, weight)``; ``weight`` None is the term alone, ``term``
#: ``zico`` with weight None is ZiCo alone.
Spec = tuple[str, float, float | None]


def predict(values: dict[str, dict[str, float]], archs: list[str], spec: Spec) -> np.ndarray:
    """The ranked score of ``archs`` under ``spec`` (larger is better)."""
    term, s, w = spec
    x = np.array([values[term][a] for a in archs])
    if w is None:
        return s * x
    return combined(np.array([values["zico"][a] for a in archs]), x, s, w)


Jobs = dict[str, tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], int]]


def correlate(jobs: Jobs, job: str, target: str, spec: Spec) -> tuple[float, float, int]:
    """(Kendall, Spearman, n) of ``spec`` against ``target`` on the students with every term."""
    values, targets, _ = jobs[job]
    archs = sorted(
        a
        for a in values.get("zico", {})
        if a in targets[target] and all(a in values.get(t, {}) for t in TERMS)
    )
    if len(archs) < 3:
        return (math.nan, math.nan, len(archs))
    p = predict(values, archs, spec)
    y = np.array([targets[target][a] for a in archs])
    return (rankstats.kendall(p, y), rankstats.spearman(p, y), len(archs))


def design(jobs: Jobs, term: str) -> tuple[float, float]:
    """The orientation and weight of ``term`` next to ZiCo with the best S1 KD Kendall."""
    best: tuple[float, float, float] | None = None
    for s in (sign(term), -sign(term)):
        for w in WEIGHTS:
            tau = correlate(jobs, "s1", "S1 KD", (term, s, w))[0]
            if best is None or tau > best[0] + 1e-12:
                best = (tau, s, w)
    assert best is not None
    return best[1], best[2]


def _cell(c: tuple[float, float, int]) -> str:
    return "-" if not math.isfinite(c[0]) else f"{c[0]:.3f} ({c[1]:.3f})"


def report(args: argparse.Namespace) -> None:
    jobs: Jobs = {
        "s1": load_job("s1", args.s1_seeds),
        **{j: load_job(j, args.vit_seeds) for j in ("pit", "autoformer")},
    }
    cols = [(j, t) for j, (_, tg, _) in jobs.items() for t in tg]
    held = [cols.index(("pit", "PiT KD")), cols.index(("autoformer", "AutoFormer KD"))]
    s1_kd = cols.index(("s1", "S1 KD"))

    def row(spec: Spec) -> list[tuple[float, float, int]]:
        return [correlate(jobs, j, t, spec) for j, t in cols]

    zico_row = row(("zico", 1.0, None))
    zico_held = float(np.mean([zico_row[i][0] for i in held]))
    rows: list[tuple[str, str, list[tuple[float, float, int]], str]] = [
        ("zico", "", zico_row, "baseline")
    ]
    kept = []
    picks: dict[str, tuple[float, float]] = {}
    for term in (*TERMS, *CONTROLS):
        a_sign = sign(term)
        rows.append((term, f"alone (sign {a_sign:+.0f})", row((term, a_sign, None)), ""))
        s, w = design(jobs, term)
        comb = row((term, s, w))
        held_mean = float(np.mean([comb[i][0] for i in held]))
        s1_up = comb[s1_kd][0] > zico_row[s1_kd][0]
        keep = s1_up and held_mean > zico_held
        why = (
            f"{'keep' if keep else 'drop'}: S1 KD {'up' if s1_up else 'not up'}, "
            f"held-out mean {held_mean - zico_held:+.3f} vs zico"
        )
        if term in CONTROLS:
            why = f"control, teacher-free (would be {why})"
        else:
            picks[term] = (comb[s1_kd][0], held_mean)
            if keep:
                kept.append(term)
        rows.append((f"zico + {term}", f"s {s:+.0f}, w {w:g}", comb, why))

    head = [t for _, t in cols] + ["mean PiT/AF"]
    print("Kendall tau (Spearman rho)\n")
    print("| score | form | " + " | ".join(head) + " | decision |")
    print("|---" * (len(head) + 3) + "|")
    for name, form, cs, why in rows:
        hm = np.mean([cs[i][0] for i in held])
        cells = " | ".join(_cell(c) for c in cs)
        print(f"| {name} | {form} | {cells} | {hm:.3f} | {why} |")
    print()
    print("students per column: " + ", ".join(f"{t} {c[2]}" for (_, t), c in zip(cols, zico_row)))
    print("probe seeds: " + ", ".join(f"{j} {jobs[j][2]}" for j in jobs))
    print(check_zico())
    secs = {}
    for j in jobs:
        path = OUT / f"{j}.jsonl"
        if path.exists():
            secs[j] = float(np.median([r["seconds"] for r in Journal(path).read()]))
    print(
        "median seconds per (student, seed), all teacher terms: "
        + ", ".join(f"{j} {v:.2f}" for j, v in secs.items())
    )
    print("kept: " + (", ".join(kept) if kept else "none"))
    pick = max(TERMS, key=lambda t: (picks[t][0], -TERMS.index(t)))
    tau, held_mean = picks[pick]
    verdict = "keep" if tau > zico_row[s1_kd][0] and held_mean > zico_held else "drop"
    print(
        f"S1 design pick: zico + {pick} (S1 KD {tau:.3f} vs zico {zico_row[s1_kd][0]:.3f}; "
        f"held-out mean {held_mean:.3f} vs zico {zico_held:.3f}): {verdict}"
    )
    print()
    print("Kendall of each term (its a-priori sign) with the parameter count: is it size?\n")
    print("| term | " + " | ".join(jobs) + " |")
    print("|---" * (len(jobs) + 1) + "|")
    for term in ("zico", *TERMS):
        cells = []
        for values, _, _ in jobs.values():
            archs = sorted(a for a in values["params"] if a in values.get(term, {}))
            x = sign(term) * np.array([values[term][a] for a in archs])
            y = np.array([values["params"][a] for a in archs])
            cells.append(f"{rankstats.kendall(x, y):.3f}" if len(archs) > 2 else "-")
        print(f"| {term} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("score")
    p.add_argument("--job", choices=("s1", "pit", "autoformer"), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--limit", type=int, default=0, help="score only the first N students")
    p.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report", help="print the Markdown table and the decisions")
    r.add_argument("--s1-seeds", type=int, nargs="+", default=None, help="default: every one")
    r.add_argument("--vit-seeds", type=int, nargs="+", default=None, help="default: every one")
    args = ap.parse_args()
    {"score": score, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
