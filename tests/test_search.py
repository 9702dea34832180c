"""Student search: budgets, aging-evolution semantics, dedup, resume (SIGKILL included), CLI."""

from __future__ import annotations

import itertools
import json
import random
import sys

import pytest
import torch
from conftest import sigkill_after_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.models.cost import ModelCost
from diswot.search.api import run_search
from diswot.search.budget import Budget, format_count, parse_count
from diswot.search.config import read_settings
from diswot.search.ledger import CANDIDATES, load_candidates
from diswot.search.objective import Evaluation
from diswot.spaces import DatasetSpec, SearchSpace, get_space
from diswot.spaces.s1 import S1Space

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------- toy space


class ToySpace(SearchSpace):
    """``n`` digits in ``0..k-1`` ("3-1-4-1"); cheap exact costs; optionally enumerable."""

    name = "toy"
    default_teacher = "none"

    def __init__(self, n: int = 5, k: int = 10, enumerable: bool = False) -> None:
        self.n, self.k, self.enumerable = n, k, enumerable
        self.mutated_parents: list[str] = []
        self.proposed: list[str] = []  # every sample and child, in order (duplicates included)

    def dataset(self, target: str | None = None) -> DatasetSpec:
        return DatasetSpec(10, 8)

    def sample(self, rng: random.Random) -> str:
        arch = "-".join(str(rng.randrange(self.k)) for _ in range(self.n))
        self.proposed.append(arch)
        return arch

    def mutate(self, arch: str, rng: random.Random) -> str:
        self.mutated_parents.append(arch)
        xs = arch.split("-")
        i = rng.randrange(self.n)
        xs[i] = str(rng.choice([v for v in range(self.k) if str(v) != xs[i]]))
        self.proposed.append("-".join(xs))
        return self.proposed[-1]

    def validate(self, arch: str) -> str:
        xs = str(arch).split("-")
        if len(xs) != self.n or not all(x.isdigit() and int(x) < self.k for x in xs):
            raise DiswotError(f"bad toy arch {arch!r}")
        return arch

    def enumerate(self) -> list[str] | None:
        if not self.enumerable:
            return None
        return ["-".join(map(str, t)) for t in itertools.product(range(self.k), repeat=self.n)]

    def build(self, arch: str, num_classes: int) -> nn.Module:
        return nn.Linear(4, num_classes)

    def compute_cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        xs = [int(x) for x in arch.split("-")]
        return ModelCost(params=1 + sum(xs), flops=1 + sum(x * x for x in xs))


def digits(arch: str) -> list[int]:
    return [int(x) for x in arch.split("-")]


class Counting:
    """Toy objective ``-|arch - optimum|_1`` that counts its calls."""

    def __init__(self, optimum: str) -> None:
        self.optimum = digits(optimum)
        self.calls: list[str] = []
        self.name = "toy-distance"

    def __call__(self, arch: str) -> Evaluation:
        self.calls.append(arch)
        d = sum(abs(a - b) for a, b in zip(digits(arch), self.optimum))
        return Evaluation(score=-float(d), components={"dist": float(d)})


# ----------------------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(
    "text, value",
    [
        ("278324", 278_324),
        (278324, 278_324),
        ("100M", 100_000_000),
        ("1.5G", 1_500_000_000),
        ("40.82M", 40_820_000),
        ("250k", 250_000),
        (" 2 m ", 2_000_000),
        (None, None),
    ],
)
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("bad", ["-5", "1.2.3", "10X", "M", "", True, -1.0])
def test_parse_count_rejects(bad):
    with pytest.raises(DiswotError, match="like 278324, 100M|non-negative"):
        parse_count(bad, "--max-flops")


def test_budget_text_and_order():
    b = Budget.parse(max_params="278324", max_flops="40.82M", min_flops="1M")
    assert b.admits(ModelCost(278_324, 40_818_944))
    assert not b.admits(ModelCost(278_325, 40_818_944))
    assert not b.admits(ModelCost(100, 999_999))
    assert b.text() == (
        "params <= 278,324 (278.32k) and FLOPs >= 1,000,000 (1.00M) and "
        "FLOPs <= 40,820,000 (40.82M)"
    )
    assert Budget().text() == "none" and format_count(40_818_944) == "40.82M"
    with pytest.raises(DiswotError, match="--min-flops 2.00M exceeds --max-flops 1.00M"):
        Budget.parse(max_flops="1M", min_flops="2M")


# ----------------------------------------------------------------------------------------- algorithms


def test_evolution_finds_the_known_optimum():
    # 8^5 = 32,768 archs: 600 random samples hit the optimum with probability ~2%; aging evolution
    # found it for each of 30 seeds tried.
    space = ToySpace(n=5, k=8)
    obj = Counting("1-4-7-2-5")
    res = run_search(
        space, objective=obj, algorithm="evolution", cycles=600, population=16, sample_size=8
    )
    assert res.winner["arch"] == "1-4-7-2-5" and res.winner["score"] == 0.0
    assert res.winner["components"] == {"dist": 0.0}
    # The population improves: the final mean beats the initial random population's mean.
    means = res.history["population_mean"]
    assert means[-1] > means[15] + 5
    rand = run_search(space, objective=Counting("1-4-7-2-5"), algorithm="random", cycles=600)
    assert rand.winner["score"] < 0  # the same number of random samples did not find it


def test_aging_evolution_parent_is_tournament_best_and_oldest_leaves():
    # With the tournament as large as the population, the parent of mutation i must be the best of
    # the population at that time. Under aging (oldest leaves, revisits count as members) that is
    # exactly proposals i .. i+P-1: the P initial samples, then one child per mutation.
    space = ToySpace(n=4, k=5)  # small: revisits happen
    obj = Counting("0-0-0-0")
    pop = 6
    res = run_search(
        space, objective=obj, algorithm="evolution", cycles=80, population=pop, sample_size=pop
    )
    assert res.steps > res.n_scored  # some children were revisits
    score = {c["arch"]: c["score"] for c in res.candidates}
    assert len(space.proposed) == res.steps == pop + len(space.mutated_parents)
    for i, parent in enumerate(space.mutated_parents):
        window = space.proposed[i : i + pop]
        assert parent in window
        assert score[parent] == max(score[a] for a in window)


def test_duplicates_are_looked_up_not_rescored():
    space = ToySpace(n=2, k=4)  # 16 archs: evolution must revisit
    obj = Counting("3-3")
    res = run_search(
        space, objective=obj, algorithm="evolution", cycles=16, population=8, sample_size=3
    )
    assert len(obj.calls) == len(set(obj.calls)) == res.n_scored == 16
    assert res.steps > res.n_scored  # revisits happened and were not scored again
    assert [c["step"] for c in res.candidates] == list(range(1, 17))


def test_crossover_is_optional_and_deterministic():
    def objective(arch: str) -> float:  # optimum 757, separable per stage
        return -sum(abs(int(a) - int(b)) for a, b in zip(arch, "757"))

    kw = {"objective": objective, "algorithm": "evolution", "cycles": 30, "population": 6,
          "sample_size": 3, "seed": 4}  # fmt: skip
    mutation_only = run_search("s1", **kw)
    crossed = run_search("s1", crossover_prob=0.7, **kw)
    again = run_search("s1", crossover_prob=0.7, **kw)
    assert [c["arch"] for c in crossed.candidates] == [c["arch"] for c in again.candidates]
    assert [c["arch"] for c in crossed.candidates] != [c["arch"] for c in mutation_only.candidates]
    assert crossed.winner["arch"] == mutation_only.winner["arch"] == "757"
    with pytest.raises(DiswotError, match="--crossover-prob must be in"):
        run_search("s1", crossover_prob=1.5, **kw)


def test_exhausted_space_stops_instead_of_spinning():
    space = ToySpace(n=2, k=3)  # 9 archs, 100 asked
    res = run_search(
        space, objective=Counting("1-1"), algorithm="random", cycles=100, stall_limit=200
    )
    assert res.n_scored == 9 and res.stop_reason == "stalled"
    assert res.winner["arch"] == "1-1"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_params=st.one_of(st.none(), st.integers(0, 30)),
    max_flops=st.one_of(st.none(), st.integers(0, 150)),
    min_params=st.one_of(st.none(), st.integers(0, 30)),
    min_flops=st.one_of(st.none(), st.integers(0, 150)),
    algorithm=st.sampled_from(["evolution", "random", "exhaustive"]),
    enumerable=st.booleans(),
    seed=st.integers(0, 3),
)
def test_no_scored_candidate_breaks_the_budget(
    max_params, max_flops, min_params, min_flops, algorithm, enumerable, seed
):
    if algorithm == "exhaustive":
        enumerable = True
    space = ToySpace(n=4, k=6, enumerable=enumerable)
    budget = Budget(max_params, max_flops, min_params, min_flops)
    admissible = [a for a in ToySpace(n=4, k=6, enumerable=True).enumerate()
                  if budget.admits(space.cost(a, 10, 8))]  # fmt: skip
    obj = Counting("5-0-5-0")
    try:
        run_search(
            space,
            objective=obj,
            algorithm=algorithm,
            cycles=15,
            population=5,
            sample_size=2,
            seed=seed,
            max_params=max_params,
            max_flops=max_flops,
            min_params=min_params,
            min_flops=min_flops,
            max_retries=200,
            stall_limit=50,
        )
    except DiswotError as exc:
        msg = str(exc)
        assert "\n" not in msg
        if "exceeds" in msg:  # min > max
            return
        assert "admits none" in msg and "loosen" in msg
        # Enumerable spaces are checked exhaustively: the error is only raised when truly empty.
        assert not enumerable or not admissible
        return
    assert obj.calls  # something was scored ...
    for arch in obj.calls:  # ... and everything scored is within budget
        assert budget.admits(space.cost(arch, 10, 8)), arch
    assert set(obj.calls) <= set(admissible)


def test_budget_admitting_nothing_is_one_clear_error():
    with pytest.raises(DiswotError, match=r"admits none of all 64 architectures of space 's1'"):
        run_search("s1", objective=Counting("1-1"), max_params="1k")
    with pytest.raises(DiswotError, match=r"admits none of 1000 random samples"):
        run_search(ToySpace(), objective=Counting("1-1-1-1-1"), max_flops=0)


def test_bad_settings_are_one_line_errors():
    for kw, pattern in [
        ({"algorithm": "bayes"}, "unknown algorithm 'bayes'"),
        ({"algorithm": "exhaustive"}, "too large to enumerate"),
        ({"cycles": 0}, "--cycles must be an integer >= 1"),
        ({"population": 4, "sample_size": 8}, "--sample-size 8 exceeds --population 4"),
    ]:
        with pytest.raises(DiswotError, match=pattern):
            run_search(ToySpace(), objective=Counting("1-1-1-1-1"), **kw)
    with pytest.raises(DiswotError, match="unknown space 'nb999'"):
        run_search("nb999")
    with pytest.raises(DiswotError, match="unknown proxy 'magic'"):
        run_search("s1", proxy="magic")
    with pytest.raises(DiswotError, match="unknown model 'resnet9000'"):
        run_search("s1", teacher="resnet9000", max_params="100k")


def test_teacher_with_another_class_count_is_refused():
    teacher = get_space("s1").build("111", 10)  # 10 classes, S1 needs 100
    with pytest.raises(DiswotError, match="teacher outputs 10 classes but 100"):
        run_search("s1", teacher=teacher, batch_size=4)


# ----------------------------------------------------------------------------------------- real scores


def test_exhaustive_s1_is_the_argmax_of_rank(tmp_path):
    from diswot.rank import run_rank

    s1 = get_space("s1")
    budget = 125_000  # the 5 smallest students (kept small: every one is a real forward pass)
    archs = [a for a in s1.enumerate() if s1.cost(a, 100, 32).params <= budget]
    ranked = run_rank(
        "s1", teacher="resnet8", proxies="diswot", seeds=1, batch_size=6, archs=archs,
        progress=False,
    )  # fmt: skip
    scores = {a: ranked.scores[a][0]["diswot"] for a in ranked.archs}
    res = run_search(
        "s1",
        teacher="resnet8",
        proxy="diswot",
        probe_seeds=1,
        batch_size=6,
        max_params=budget,
        out_dir=tmp_path / "run",
    )
    assert res.settings["algorithm"] == "exhaustive"  # the default for S1
    assert res.n_scored == len(archs) == 5 and res.stop_reason == "exhausted"
    assert res.rejected == 64 - 5
    assert res.winner["arch"] == max(scores, key=scores.get)
    for c in res.candidates:
        assert c["score"] == pytest.approx(scores[c["arch"]], rel=1e-9, abs=1e-12)
        assert set(c["components"]) == {"ms", "mr"}
    # Ground truth is reported for the winner, after the search.
    assert set(res.ground_truth) == {"kd", "cls"}
    out = json.loads((tmp_path / "run" / "result.json").read_text())
    assert out["winner"]["arch"] == res.winner["arch"] and len(out["top"]) == 5
    assert (tmp_path / "run" / "progress.png").stat().st_size > 1000


def test_proxy_is_oriented_and_truth_read_only_after_the_decision():
    class Watched(S1Space):
        truth_read = False

        def ground_truth(self, target):
            Watched.truth_read = True
            return super().ground_truth(target)

    space = Watched()
    res = run_search(
        space, teacher="resnet8", proxy="mr", batch_size=4, max_params="100k", algorithm="random",
        cycles=2,
    )  # fmt: skip
    # mr is lower-is-better: the winner has the smallest raw value, score = -value.
    assert res.winner["value"] == min(c["value"] for c in res.candidates)
    assert res.winner["score"] == -res.winner["value"]
    assert Watched.truth_read and set(res.ground_truth) == {"kd", "cls"}

    def objective(arch):
        assert not Watched.truth_read, "ground truth read before the search decided"
        return 0.0

    Watched.truth_read = False
    run_search(space, objective=objective, cycles=3, algorithm="random")


# ----------------------------------------------------------------------------------------- pieces


def test_settings_json_keys_and_the_fields_a_resume_must_match_stay_as_they_were():
    # Run folders written before the package split must still resume: same keys, same order.
    from diswot.config import to_settings
    from diswot.search.config import FIXED_SETTINGS, SearchConfig

    assert list(to_settings(SearchConfig())) == [
        "space", "target", "num_classes", "image_size", "teacher", "objective", "algorithm",
        "seed", "cycles", "population", "sample_size", "crossover_prob", "budget", "batch_size",
        "probe_seeds", "init", "data", "data_root", "device", "flop_convention", "precision",
        "engine", "in_flight", "workers", "group", "backend",
        "teacher_ckpt", "teacher_sha256", "teacher_init",  # added with --teacher-ckpt
        "references",  # added with composite objectives (checked by hash on resume)
    ]  # fmt: skip
    assert FIXED_SETTINGS == (
        "space", "target", "num_classes", "image_size", "teacher", "objective", "algorithm",
        "seed", "population", "sample_size", "crossover_prob", "budget", "batch_size",
        "probe_seeds", "init", "data", "flop_convention", "precision",
        "teacher_sha256", "teacher_init",
    )  # fmt: skip


def test_ledger_claims_are_new_duplicate_or_replayed():
    from diswot.parallel import InlinePool
    from diswot.search.ledger import Admission, Ledger, State
    from diswot.search.objective import GivenObjective

    space, obj = ToySpace(n=2, k=4), Counting("3-3")
    admission = Admission(space, Budget(max_params=6), 10, 8, max_retries=10)
    recorded = [{"step": 1, "arch": "1-1", "score": None, "params": 3, "flops": 3}]
    ledger = Ledger(admission, 5, recorded, None, InlinePool(GivenObjective(obj)))
    first, again, new = ledger.claim("1-1"), ledger.claim("1-1"), ledger.claim("2-2")
    states = [c.state for c in (first, again, new)]
    assert states == [State.REPLAYED, State.DUPLICATE, State.SCORING]
    rec, fresh = ledger.finish(first)
    assert fresh and rec["step"] == 1 and rec["score"] != rec["score"]  # null read back as NaN
    assert ledger.finish(again) == (rec, False)
    rec, fresh = ledger.finish(new)
    assert fresh and rec["step"] == 2 and rec["score"] == -2.0 and obj.calls == ["2-2"]
    assert ledger.steps == 3 and len(ledger.order) == 2
    assert not admission.admits("3-3") and admission.rejected == 1  # 7 params: over budget
    with pytest.raises(DiswotError, match="step 1 holds '1-1' but this search proposes '0-1'"):
        Ledger(admission, 5, recorded, None, None).claim("0-1")


def test_a_searcher_proposes_and_is_told_in_proposal_order():
    from diswot.parallel import InlinePool
    from diswot.search.ledger import Admission, Ledger
    from diswot.search.objective import GivenObjective
    from diswot.search.searchers import Searcher, drive

    class Listed(Searcher):
        def __init__(self, archs):
            self.archs, self.told = list(archs), []

        @classmethod
        def from_config(cls, admission, rng, cfg):
            raise NotImplementedError

        def can_propose(self, in_flight):
            return bool(self.archs)

        def propose(self, in_flight):
            return self.archs.pop(0)

        def tell(self, record, new):
            self.told.append((record["arch"], new))

    admission = Admission(ToySpace(n=2, k=4), Budget(), 10, 8, max_retries=10)
    ledger = Ledger(admission, 10, [], None, InlinePool(GivenObjective(Counting("0-0"))))
    searcher = Listed(["1-1", "2-2", "1-1", "3-3"])
    assert drive(searcher, ledger, in_flight=3, stall_limit=5) == "stalled"  # ran out: 3 < 10
    assert searcher.told == [("1-1", True), ("2-2", True), ("1-1", False), ("3-3", True)]
    assert [r["step"] for r in ledger.order] == [1, 2, 3] and ledger.steps == 4


# ----------------------------------------------------------------------------------------- resume


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_resume_after_truncation_replays_exactly(tmp_path):
    kw = {"algorithm": "evolution", "cycles": 40, "population": 8, "sample_size": 3, "seed": 5}
    full = run_search(ToySpace(), objective=Counting("9-9-9-9-9"), out_dir=tmp_path / "a", **kw)
    lines = (tmp_path / "a" / CANDIDATES).read_text().splitlines(keepends=True)
    part = tmp_path / "b"
    part.mkdir()
    (part / "settings.json").write_text((tmp_path / "a" / "settings.json").read_text())
    # 17 complete records and half of the 18th: a process killed mid-write.
    (part / CANDIDATES).write_text("".join(lines[:17]) + lines[17][:25])
    obj = Counting("9-9-9-9-9")
    resumed = run_search(ToySpace(), objective=obj, out_dir=part, resume=True, **kw)
    assert len(obj.calls) == 40 - 17  # nothing recorded was scored again
    assert resumed.winner == full.winner
    assert _strip(load_candidates(part / CANDIDATES)) == _strip(
        load_candidates(tmp_path / "a" / CANDIDATES)
    )
    # A finished run resumed again scores nothing and changes nothing.
    again = Counting("9-9-9-9-9")
    run_search(ToySpace(), objective=again, out_dir=part, resume=True, **kw)
    assert again.calls == []
    # It may be extended: more cycles continue the same trajectory.
    more = run_search(ToySpace(), objective=Counting("9-9-9-9-9"), out_dir=part, resume=True,
                      **{**kw, "cycles": 50})  # fmt: skip
    assert [c["arch"] for c in more.candidates[:40]] == [c["arch"] for c in full.candidates]


def test_resume_refuses_other_settings_corruption_and_overwrites(tmp_path):
    kw = {"algorithm": "random", "cycles": 10, "seed": 1}
    out = tmp_path / "run"
    run_search(ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=out, **kw)
    with pytest.raises(DiswotError, match="not empty; use --resume .* or another --out"):
        run_search(ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=out, **kw)
    with pytest.raises(DiswotError, match=r"other settings: seed=1 \(now 2\)"):
        run_search(
            ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=out, resume=True,
            **{**kw, "seed": 2},
        )  # fmt: skip
    with pytest.raises(DiswotError, match="holds no search run"):
        run_search(ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=tmp_path / "x", resume=True)
    with pytest.raises(DiswotError, match="already holds 10 scored candidates"):
        run_search(
            ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=out, resume=True,
            **{**kw, "cycles": 5},
        )  # fmt: skip
    path = out / CANDIDATES
    lines = path.read_text().splitlines(keepends=True)
    before = path.read_text()
    path.write_text("".join(lines[:3]) + "{broken\n" + "".join(lines[4:]))
    with pytest.raises(DiswotError, match=r"candidates.jsonl line 4 is corrupt"):
        run_search(ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=out, resume=True, **kw)
    # A record that does not match the replay (another code or seed wrote it) is refused too.
    swapped = lines[:]
    swapped[2] = swapped[2].replace(json.loads(lines[2])["arch"], "0-0-0-0-0")
    path.write_text("".join(swapped))
    with pytest.raises(DiswotError, match="step 3 holds '0-0-0-0-0' but this search proposes"):
        run_search(ToySpace(), objective=Counting("1-1-1-1-1"), out_dir=out, resume=True, **kw)
    path.write_text(before)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from diswot.cli import main; sys.exit(main())",
            "search", *args]  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, capsys):
    # Evolution on the S1 students under 200k params: small nets keep the three runs cheap.
    args = ["--space", "s1", "--algorithm", "evolution", "--teacher", "resnet8",
            "--max-params", "200k", "--cycles", "12", "--population", "4", "--sample-size", "2",
            "--batch-size", "4", "--seed", "3", "--no-progress"]  # fmt: skip
    killed = tmp_path / "killed"
    n_killed = sigkill_after_lines(_cli(*args, "--out", str(killed)), killed / CANDIDATES, 2)
    assert 2 <= n_killed < 12

    # Resume with nothing but the folder, and an uninterrupted run, both through the CLI.
    assert main(["search", "--resume", str(killed), "--json", "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    fresh_dir = tmp_path / "fresh"
    assert main(["search", *args, "--out", str(fresh_dir), "--json"]) == 0
    uninterrupted = json.loads(capsys.readouterr().out)

    assert resumed["winner"] == uninterrupted["winner"]
    assert set(resumed["winner"]) >= {"arch", "score", "params", "flops"}
    a, b = load_candidates(killed / CANDIDATES), load_candidates(fresh_dir / CANDIDATES)
    assert len(a) == len(b) == 12 and _strip(a) == _strip(b)
    assert resumed["winner"]["params"] <= 200_000


# ----------------------------------------------------------------------------------------- CLI


def test_cli_errors_are_one_line(capsys, tmp_path):
    cases = [
        (["--space", "nope"], "unknown space 'nope'"),
        (["--space", "s1", "--max-params", "1k", "--out", str(tmp_path / "a")], "admits none"),
        (["--space", "s1", "--teacher", "vgg99", "--out", str(tmp_path / "b")], "unknown model"),
        (["--space", "s1", "--max-flops", "12Q"], "like 278324, 100M"),
        (["--resume", str(tmp_path / "none")], "holds no search run"),
        (["--space", "s1", "--device", "tpu"], "unknown device 'tpu'; accepted: auto, cpu, cuda"),
        (["--space", "s1", "--device", "meta"], "device 'meta' is not supported; accepted: auto"),
    ]
    for argv, pattern in cases:
        assert main(["search", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("diswot: error: ") and pattern in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_json_result(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["search", "--space", "s1", "--teacher", "resnet8", "--max-params", "100k",
            "--batch-size", "4", "--out", str(out), "--json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["winner"]) >= {"arch", "score", "params", "flops"}
    assert res["winner"]["params"] <= 100_000 and res["settings"]["algorithm"] == "exhaustive"
    assert "params <= 100,000" in res["budget"] and "multiply-adds" in res["cost_convention"]
    assert res["winner"]["arch"] in get_space("s1").enumerate()
    assert res["n_scored"] == len((out / CANDIDATES).read_text().splitlines())
    # Resuming the finished run with only --resume reuses its settings and scores nothing new.
    assert main(["search", "--resume", str(out), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["winner"] == res["winner"]
    assert main(["search", "--resume", str(out), "--seed", "9"]) == 2
    assert "other settings: seed=0 (now 9)" in capsys.readouterr().err


def test_torch_state_is_left_alone():
    before = torch.get_rng_state()
    run_search(ToySpace(), objective=Counting("1-1-1-1-1"), cycles=5, algorithm="random")
    assert torch.equal(before, torch.get_rng_state())


def test_cli_announces_the_folder_only_once_the_run_is_checked(capsys, tmp_path):
    out = tmp_path / "run"
    cases = [
        (["--space", "s1", "--workers", "0"], "--workers must be an integer >= 1"),
        (["--space", "nope"], "unknown space 'nope'"),
        (["--space", "s1", "--device", "tpu"], "unknown device 'tpu'"),
        (["--space", "s1", "--threads", "-1"], "--threads must be at least 1"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--space", "s1", "--device", "cuda"], "CUDA is not available"))
    # --threads 1 first (a case's own --threads wins): on a busy machine the automatic choice
    # is announced on stderr, before the lines this test is about.
    for argv, pattern in cases:
        assert main(["search", "--threads", "1", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("diswot: error: ") and pattern in err and "\n" not in err, err
        assert not out.exists()
    argv = ["search", "--space", "s1", "--teacher", "resnet8", "--batch-size", "4", "--cycles",
            "2", "--out", str(out), "--no-progress", "--json", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    settings, writing = capsys.readouterr().err.strip().splitlines()
    assert settings.startswith("diswot search: --space s1 --teacher resnet8 --target kd ")
    assert writing == f"diswot search: writing {out}/"
    assert main(["search", "--resume", str(out), "--no-progress", "--json", "--threads", "1"]) == 0
    assert capsys.readouterr().err.strip() == f"diswot search: resuming {out}/"


def test_summary_names_the_target_or_the_data_a_space_without_targets_uses():
    def objective(arch: str) -> float:
        return float(len(arch))

    kw = dict(objective=objective, cycles=2, population=2, sample_size=1)
    imagenet = run_search("resnet-imagenet", **kw).summary()
    assert "on resnet-imagenet (1000 classes, 224 px), teacher resnet34" in imagenet
    assert "None" not in imagenet
    assert "on nb201 (target cifar100), teacher" in run_search("nb201", **kw).summary()


def test_settings_record_the_data_root_and_a_resume_reuses_it(tmp_path, fake_cifar):
    from diswot.cli.search import _from_settings

    out = tmp_path / "run"
    argv = ["search", "--space", "s1", "--teacher", "resnet8", "--max-params", "100k",
            "--batch-size", "4", "--cycles", "2", "--no-progress", "--out", str(out),
            "--data", "cifar100", "--data-root", str(fake_cifar)]  # fmt: skip
    assert main(argv) == 0
    stored = read_settings(out)
    assert stored["data_root"] == str(fake_cifar)
    assert _from_settings(stored)["data_root"] == str(fake_cifar)  # what --resume DIR fills in


def test_a_teacher_module_is_recorded_by_its_architecture(tmp_path):
    from diswot.models import create_model

    # random: two untrained modules' own (different) weights would be refused as other weights.
    kw = dict(cycles=2, batch_size=4, out_dir=tmp_path / "m", progress=False, teacher_init="random")
    res = run_search("s1", teacher=create_model("resnet8"), **kw)
    assert res.settings["teacher"].startswith("CifarResNet#")
    run_search("s1", teacher=create_model("resnet8"), resume=True, **{**kw, "cycles": 3})
    with pytest.raises(DiswotError, match="other settings: teacher='CifarResNet#"):
        run_search("s1", teacher=create_model("resnet20"), resume=True, **{**kw, "cycles": 4})
