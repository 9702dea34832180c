"""Pareto search: latency measurement, the front, NSGA-II through Optuna, files, resume and CLI."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch
from conftest import sigkill_after_lines
from torch import nn

import diswot.latency as latency_module
from diswot.cli import main
from diswot.errors import DiswotError
from diswot.latency import measure_arch, measure_latency
from diswot.models.cost import ModelCost
from diswot.search.api import run_search
from diswot.search.ledger import CANDIDATES, load_candidates
from diswot.search.pareto.config import ParetoConfig
from diswot.search.pareto.front import pareto_front, parse_costs
from diswot.search.pareto.measure import LATENCIES
from diswot.search.pareto.plan import INSTALL
from diswot.search.pareto.result import PARETO_CSV, PARETO_JSON
from diswot.spaces import DatasetSpec, SearchSpace, get_space

pytest.importorskip("optuna")  # in the test extra; the missing-optuna message is tested below

pytestmark = pytest.mark.usefixtures("one_thread")

COSTS = {"params": "params", "flops": "flops", "latency": "latency_ms"}


# ----------------------------------------------------------------------------------------- helpers


def dominates(a: dict, b: dict, keys: list[str]) -> bool:
    """``a`` dominates ``b``: score no lower, every cost no higher, one of them strictly better."""
    no_worse = a["score"] >= b["score"] and all(a[k] <= b[k] for k in keys)
    better = a["score"] > b["score"] or any(a[k] < b[k] for k in keys)
    return no_worse and better


def check_front(front: list[dict], candidates: list[dict], costs: list[str]) -> None:
    """The front is exactly the candidates nothing dominates (brute force over every pair)."""
    keys = [COSTS[c] for c in costs]
    finite = [c for c in candidates if c["score"] is not None and math.isfinite(c["score"])]
    expected = {c["arch"] for c in finite if not any(dominates(o, c, keys) for o in finite)}
    assert {r["arch"] for r in front} == expected
    assert len(front) == len(expected)


def toy_objective(arch: str) -> float:
    """A cheap score that grows with the S1 depths (so it trades off against the size)."""
    return sum(int(c) for c in arch) + 0.1 * int(arch[0])


toy_objective.name = "toy"  # type: ignore[attr-defined]


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


class Genes(SearchSpace):
    """Two digits ``"a-b"`` in 0..4; cheap costs; optionally with its own genes or enumerable."""

    name = "genes"
    default_teacher = "none"

    def __init__(self, own_genes: bool = False, enumerable: bool = True) -> None:
        self.own_genes, self.enumerable = own_genes, enumerable
        if own_genes:  # the opt-in methods exist only on such an instance
            self.genes = lambda: {"a": tuple(range(5)), "b": tuple(range(5))}
            self.from_genes = lambda p: f"{p['a']}-{p['b']}"
            self.to_genes = lambda arch: dict(zip("ab", map(int, arch.split("-"))))

    def dataset(self, target: str | None = None) -> DatasetSpec:
        return DatasetSpec(10, 8)

    def sample(self, rng: random.Random) -> str:
        return f"{rng.randrange(5)}-{rng.randrange(5)}"

    def mutate(self, arch: str, rng: random.Random) -> str:
        a, b = arch.split("-")
        return f"{(int(a) + 1) % 5}-{b}"

    def validate(self, arch: str) -> str:
        return arch

    def enumerate(self) -> list[str] | None:
        if not self.enumerable:
            return None
        return [f"{a}-{b}" for a, b in itertools.product(range(5), repeat=2)]

    def build(self, arch: str, num_classes: int) -> nn.Module:
        return nn.Linear(4, num_classes)

    def compute_cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        a, b = map(int, arch.split("-"))
        return ModelCost(params=1 + a + b, flops=1 + a * b)


def genes_objective(arch: str) -> float:
    a, b = map(int, arch.split("-"))
    return float(a + 2 * b)


genes_objective.name = "genes"  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------- latency


class Clock:
    """A fake ``perf_counter`` the model below moves forward by the next duration per call."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.t = 0.0
        self.durations = list(durations_ms)

    def __call__(self) -> float:
        return self.t


class Timed(nn.Module):
    """Each forward takes the clock's next duration, and records how it was called."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.calls: list[tuple[int, bool, bool]] = []
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], self.training, torch.is_inference_mode_enabled()))
        self.clock.t += self.clock.durations.pop(0) / 1e3
        return self.lin(x.mean(dim=(2, 3)))


def test_latency_is_the_median_of_the_timed_runs_warmup_excluded(monkeypatch):
    # Two slow warm-up runs, then five timed ones with an outlier: the median ignores both.
    clock = Clock([90.0, 80.0, 1.0, 3.0, 2.0, 50.0, 4.0])
    monkeypatch.setattr(latency_module, "perf_counter", clock)
    model = Timed(clock).train()
    lat = measure_latency(model, 8, batch=3, warmup=2, repeats=5)
    assert lat.times_ms == pytest.approx((1.0, 3.0, 2.0, 50.0, 4.0))
    assert lat.median_ms == pytest.approx(3.0)
    assert len(model.calls) == 7 and not clock.durations
    assert all(call == (3, False, True) for call in model.calls)  # batch 3, eval, no autograd
    d = lat.to_dict()
    assert (d["batch"], d["warmup"], d["repeats"], d["device"]) == (3, 2, 5, "cpu")
    assert d["threads"] == torch.get_num_threads()
    assert "median of 5 runs after 2 warm-up, batch 3, eval mode" in lat.text()


def test_latency_counts_are_checked_and_the_callers_rng_is_left_alone():
    for kwargs, flag in (({"batch": 0}, "--latency-batch"), ({"repeats": 0}, "--latency-repeats"),
                         ({"warmup": -1}, "--latency-warmup")):  # fmt: skip
        with pytest.raises(DiswotError, match=flag):
            measure_latency(nn.Identity(), 4, **kwargs)
    before = torch.get_rng_state()
    lat = measure_arch(get_space("s1"), "111", 100, 32, batch=2, warmup=0, repeats=2)
    assert torch.equal(before, torch.get_rng_state())
    assert lat.batch == 2 and len(lat.times_ms) == 2 and lat.median_ms > 0


# ----------------------------------------------------------------------------------------- front


def test_front_is_the_non_dominated_set_by_brute_force():
    rng = random.Random(0)
    recs = [
        {"step": i + 1, "arch": str(i), "score": rng.choice([rng.random(), math.nan]),
         "params": rng.randrange(20), "flops": rng.randrange(20), "latency_ms": rng.random()}
        for i in range(300)
    ]  # fmt: skip
    recs.append({**recs[0], "arch": "twin", "step": 301})  # equal objectives: neither dominates
    for costs in (["params"], ["params", "flops"], ["params", "flops", "latency"]):
        front = pareto_front(recs, costs)
        check_front(front, recs, costs)
        keys = [COSTS[c] for c in costs]
        assert [r[keys[0]] for r in front] == sorted(r[keys[0]] for r in front)
    assert ("0" in {r["arch"] for r in pareto_front(recs, ["params"])}) == (
        "twin" in {r["arch"] for r in pareto_front(recs, ["params"])}
    )


@pytest.mark.parametrize(
    "text, message",
    [("", "needs one or more"), ("params,size", "unknown cost 'size'"),
     ("params,params", "names a cost twice")],
)  # fmt: skip
def test_costs_are_checked(text, message):
    with pytest.raises(DiswotError, match=message):
        parse_costs(text)
    assert parse_costs(" Params , latency ") == ("params", "latency")


# ----------------------------------------------------------------------------------------- search


def test_pareto_search_is_deterministic_and_writes_its_files(tmp_path):
    kw = dict(objective=toy_objective, pareto="params,flops", cycles=20, population=6, seed=4)
    a = run_search("s1", out_dir=tmp_path / "a", **kw)
    b = run_search("s1", out_dir=tmp_path / "b", **kw)
    c = run_search("s1", **{**kw, "seed": 5})
    assert strip(a.candidates) == strip(b.candidates) and a.front == b.front
    assert [r["arch"] for r in a.candidates] != [r["arch"] for r in c.candidates]
    check_front(a.front, a.candidates, ["params", "flops"])
    assert a.winner["score"] == max(r["score"] for r in a.candidates)  # best score within budget
    assert a.winner["arch"] in {r["arch"] for r in a.front}
    out = tmp_path / "a"
    for name in (PARETO_JSON, PARETO_CSV, "pareto.png", "result.json", CANDIDATES):
        assert (out / name).is_file(), name
    assert not (out / LATENCIES).exists()  # nothing asked for latency
    saved = json.loads((out / PARETO_JSON).read_text())
    assert saved["minimise"] == ["params", "flops"] and "best score" in saved["winner_rule"]
    assert [r["arch"] for r in saved["front"]] == [r["arch"] for r in a.front]
    rows = list(csv.DictReader((out / PARETO_CSV).open()))
    assert list(rows[0]) == ["step", "arch", "score", "params", "flops", "latency_ms"]
    assert [r["arch"] for r in rows] == [r["arch"] for r in a.front]
    settings = json.loads((out / "settings.json").read_text())["settings"]
    assert settings["algorithm"] == "nsga2" and settings["pareto"]["costs"] == ["params", "flops"]
    result = json.loads((out / "result.json").read_text())
    assert result["pareto"]["front"] == saved["front"]
    assert result["settings"] == settings  # as settings.json holds them, the pareto object too


def test_latency_budget_is_respected_and_recorded(tmp_path):
    s1 = get_space("s1")
    fast, slow = (
        measure_arch(s1, a, 100, 32, warmup=1, repeats=3).median_ms for a in ("111", "777")
    )
    limit = (fast + slow) / 2
    cfg = ParetoConfig(costs=("params", "latency"), max_latency_ms=limit, latency_batch=2,
                       latency_warmup=1, latency_repeats=3)  # fmt: skip
    res = run_search("s1", objective=toy_objective, pareto=cfg, cycles=12, population=6,
                     out_dir=tmp_path / "run")  # fmt: skip
    records = load_candidates(tmp_path / "run" / CANDIDATES)
    assert records and all(r["latency_ms"] <= limit and r["latency_batch"] == 2 for r in records)
    measured = {r["arch"]: r for r in map(json.loads, (tmp_path / "run" / LATENCIES).open())}
    assert all(measured[r["arch"]]["median_ms"] == r["latency_ms"] for r in records)
    assert any(m["median_ms"] > limit for m in measured.values())  # some were turned away
    assert all(m["batch"] == 2 and len(m["times_ms"]) == 3 for m in measured.values())
    assert res.rejected > 0 and f"latency <= {limit:g} ms (batch 2, cpu)" in res.budget
    check_front(res.front, records, ["params", "latency"])
    assert "latency median of 3 runs after 1 warm-up, batch 2" in res.summary()
    assert res.winner["latency_ms"] <= limit


def test_resume_replays_scores_and_latencies_exactly(tmp_path):
    cfg = ParetoConfig(costs=("flops", "latency"), latency_warmup=0, latency_repeats=2)
    kw = dict(objective=toy_objective, pareto=cfg, cycles=14, population=4, seed=2)
    full = run_search("s1", out_dir=tmp_path / "run", **kw)
    path = tmp_path / "run" / CANDIDATES
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5]) + lines[5][:20])  # killed mid-write of step 6
    for name in ("result.json", PARETO_JSON, PARETO_CSV):
        (tmp_path / "run" / name).unlink()
    resumed = run_search("s1", out_dir=tmp_path / "run", resume=True, **kw)
    assert strip(resumed.candidates) == strip(full.candidates)
    assert resumed.front == full.front  # latencies were read back, not measured again
    assert json.loads((tmp_path / "run" / PARETO_JSON).read_text())["front"]


def test_every_shipped_space_has_an_encoding_or_a_clear_refusal():
    from diswot.search.pareto.encoding import genome_for

    rng = random.Random(0)
    for name in ("s1", "nb201", "pit", "autoformer"):
        space = get_space(name)
        genome = genome_for(space)
        for _ in range(5):  # arch -> genes -> arch is the identity
            arch = space.sample(rng)
            assert genome.decode(genome.encode(arch)) == arch
        dists = genome.distributions()
        assert set(dists) == set(genome.encode(space.sample(rng)))
    with pytest.raises(DiswotError, match="'resnet-imagenet' cannot be searched with --pareto"):
        genome_for(get_space("resnet-imagenet"))
    assert genome_for(Genes()).genes == (("index", None),)  # enumerable: the index fallback
    assert [n for n, _ in genome_for(Genes(own_genes=True)).genes] == ["a", "b"]
    with pytest.raises(DiswotError, match="neither lists its architectures"):
        genome_for(Genes(enumerable=False))


@pytest.mark.parametrize("own_genes", [False, True])
def test_a_users_space_is_searched_through_its_genes_or_its_list(own_genes):
    res = run_search(Genes(own_genes=own_genes), objective=genes_objective, pareto="params",
                     cycles=25, population=4)  # fmt: skip
    check_front(res.front, res.candidates, ["params"])
    assert res.winner["arch"] == "4-4"  # the whole space was scored: the true optimum


def test_pareto_settings_errors_are_one_line():
    cases = [
        (dict(pareto="params", algorithm="evolution"), "drop --algorithm evolution"),
        (dict(algorithm="nsga2"), "give --pareto COSTS"),
        (dict(pareto="params", population=1), "--population must be at least 2"),
        (dict(pareto=ParetoConfig(costs=("latency",)), workers=2), "use --workers 1"),
        (dict(pareto=ParetoConfig(max_latency_ms=0.0)), "--max-latency-ms must be a positive"),
        (dict(pareto=ParetoConfig(latency_repeats=0)), "--latency-repeats must be an integer"),
        (dict(pareto=ParetoConfig(max_latency_ms=1e-6, latency_repeats=1, latency_warmup=0)),
         "admits none of"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(DiswotError, match=message):
            run_search("s1", objective=toy_objective, cycles=3, **kwargs)


def test_resume_refuses_other_pareto_settings(tmp_path):
    out = tmp_path / "run"
    run_search("s1", objective=toy_objective, pareto="params", cycles=4, population=4, out_dir=out)
    with pytest.raises(DiswotError, match=r"costs=\['params'\] \(now \['flops'\]\)"):
        run_search("s1", objective=toy_objective, pareto="flops", cycles=4, population=4,
                   out_dir=out, resume=True)  # fmt: skip
    with pytest.raises(DiswotError, match="algorithm='nsga2' \\(now 'random'\\)"):
        run_search("s1", objective=toy_objective, algorithm="random", cycles=4, out_dir=out,
                   resume=True)  # fmt: skip


def test_storage_holds_the_study_and_a_resume_continues_it(tmp_path):
    import optuna

    db = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "run"
    cfg = ParetoConfig(costs=("params",), storage=db, study_name="s1-study")
    kw = dict(objective=toy_objective, pareto=cfg, population=4, out_dir=out)
    first = run_search("s1", cycles=6, **kw)
    run_id = json.loads((out / "settings.json").read_text())["settings"]["pareto"]["run_id"]
    study = optuna.load_study(study_name="s1-study", storage=db)
    stale = study.ask()  # as a process killed while scoring leaves it: RUNNING for ever
    stale.set_user_attr("run", run_id)
    grown = run_search("s1", cycles=10, resume=True, **kw)
    assert study.trials[stale.number].state.name == "FAIL"  # failed, so NSGA-II does not wait
    assert strip(grown.candidates[:6]) == strip(first.candidates)
    study = optuna.load_study(study_name="s1-study", storage=db)
    done = [t for t in study.trials if t.state.name == "COMPLETE" and "step" in t.user_attrs]
    assert sorted(t.user_attrs["step"] for t in done) == list(range(1, 11))  # no step twice
    by_step = {t.user_attrs["step"]: t for t in done}
    for rec in grown.candidates:
        trial = by_step[rec["step"]]
        assert trial.user_attrs["arch"] == rec["arch"]
        assert trial.values == [rec["score"], rec["params"]]
    settings = json.loads((out / "settings.json").read_text())["settings"]["pareto"]
    assert settings["storage"] == db and settings["run_id"]
    with pytest.raises(DiswotError, match="holds another search"):
        run_search("s1", objective=toy_objective, pareto=ParetoConfig(
            costs=("params",), storage=db, study_name="s1-study"), max_params="1M", cycles=2,
            population=4)  # fmt: skip


# ----------------------------------------------------------------------------------------- CLI


def test_cli_s1_pareto_with_latency(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["search", "--space", "s1", "--teacher", "resnet8", "--batch-size", "4",
            "--pareto", "params,latency", "--latency-warmup", "1", "--latency-repeats", "3",
            "--cycles", "10", "--population", "4", "--out", str(out), "--no-progress",
            "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert (
        "Pareto search with Optuna's NSGA-II (population 4): maximise zico, minimise "
        "params, latency; latency = median of 3 runs after 1 warm-up, batch 1" in captured.err
    )
    assert "the winner is the best score within the budgets" in captured.out
    assert "latency median of 3 runs after 1 warm-up, batch 1, eval mode, fp32, on cpu" \
        in captured.out  # fmt: skip
    records = load_candidates(out / CANDIDATES)
    front = json.loads((out / PARETO_JSON).read_text())["front"]
    check_front(front, records, ["params", "latency"])
    assert all(r["latency_batch"] == 1 and r["latency_ms"] > 0 for r in records)
    assert (out / "pareto.png").stat().st_size > 10_000


def test_cli_nb201_pareto_and_resume_from_the_folder_alone(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["search", "--space", "nb201", "--teacher", "resnet8", "--batch-size", "4",
            "--pareto", "params,flops", "--max-flops", "60M", "--cycles", "8", "--population", "4",
            "--out", str(out), "--no-progress", "--threads", "1", "--json"]  # fmt: skip
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    records = load_candidates(out / CANDIDATES)
    assert len(records) == 8 and all(r["flops"] <= 60e6 for r in records)
    check_front(first["pareto"]["front"], records, ["params", "flops"])
    assert main(["search", "--resume", str(out), "--cycles", "10", "--json", "--no-progress",
                 "--threads", "1"]) == 0  # fmt: skip
    grown = json.loads(capsys.readouterr().out)
    assert grown["settings"]["algorithm"] == "nsga2" and grown["n_scored"] == 10
    check_front(grown["pareto"]["front"], load_candidates(out / CANDIDATES), ["params", "flops"])


def test_cli_pareto_only_options_need_pareto(capsys, tmp_path):
    assert (
        main(["search", "--space", "s1", "--max-latency-ms", "3", "--out", str(tmp_path / "x")])
        == 2
    )
    assert (
        "--max-latency-ms belongs to the Pareto search; add --pareto COSTS"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "x").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from diswot.cli import main; sys.exit(main())",
            "search", *args]  # fmt: skip


def test_without_optuna_the_command_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['optuna'] = None; from diswot.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # fmt: skip
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", code, "search", "--space", "s1", "--pareto", "params", "--out",
         str(out)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"diswot: error: {INSTALL}"]
    assert not out.exists()


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_front(tmp_path, capsys):
    args = ["--space", "s1", "--teacher", "resnet8", "--batch-size", "4", "--pareto",
            "params,flops", "--cycles", "14", "--population", "4", "--seed", "3",
            "--no-progress"]  # fmt: skip
    killed = tmp_path / "killed"
    assert 3 <= sigkill_after_lines(_cli(*args, "--out", str(killed)), killed / CANDIDATES, 3) < 14

    assert main(["search", "--resume", str(killed), "--json", "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert main(["search", *args, "--out", str(tmp_path / "fresh"), "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert resumed["pareto"]["front"] == fresh["pareto"]["front"]
    assert resumed["winner"] == fresh["winner"]
    a, b = load_candidates(killed / CANDIDATES), load_candidates(tmp_path / "fresh" / CANDIDATES)
    assert len(a) == 14 and strip(a) == strip(b)
