"""The pick, shown after a search: the winner's rank by shipped accuracy among every admissible
architecture (or, for a space too large to enumerate, among the scored candidates) and its regret,
in the summary's ``pick`` line and ``result.json``; looked up after the decision, never used by it.

Objectives here are cheap functions of the architecture, or the ``params`` proxy, so no network is
scored; the expected ranks are counted independently from the shipped tables.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from diswot import bench
from diswot.cli import main
from diswot.search.api import run_search
from diswot.search.result import pick_report, pick_text
from diswot.spaces import get_space
from diswot.spaces.s1 import S1Space

RESNET20_PARAMS = 278324


def _admissible_s1(max_params: int) -> list[str]:
    s1 = get_space("s1")
    return [a for a in s1.enumerate() if s1.cost(a, 100, 32).params <= max_params]


def _expected(winner: str, pool: list[str], table: dict[str, float]) -> dict:
    best = max(pool, key=table.__getitem__)
    return {
        "rank": 1 + sum(table[a] > table[winner] for a in pool),
        "of": len(pool),
        "accuracy": table[winner],
        "best": table[best],
        "best_arch": best,
        "regret": round(table[best] - table[winner], 6),
    }


def test_s1_under_resnet20s_params_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    argv = ["search", "--space", "s1", "--proxy", "params", "--max-params", str(RESNET20_PARAMS)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out.splitlines()
    result = json.loads((out / "result.json").read_text())
    winner = result["winner"]["arch"]
    pool = _admissible_s1(RESNET20_PARAMS)
    assert len(pool) == 22 and winner in pool
    pick = result["pick"]
    assert (pick["among"], pick["n"]) == ("admissible", 22)
    for t in ("kd", "cls"):  # S1's two targets share CIFAR-100
        assert pick["targets"][t] == _expected(winner, pool, bench.s1_accuracy(t))
    heads = [line.split()[0] for line in text]
    assert heads.index("pick") == heads.index("truth") + 1
    kd = pick["targets"]["kd"]
    assert f"kd: rank {kd['rank']} of 22, regret {kd['regret']:.2f}" in text[heads.index("pick")]
    assert "all admissible architectures" in text[heads.index("pick")]


def test_the_pick_never_steers_the_search() -> None:
    """The winner is the objective's, however bad its accuracy: a search that maximises minus the
    kd accuracy picks the worst admissible student, and the pick says so."""
    table = bench.s1_accuracy("kd")
    res = run_search("s1", objective=lambda a: -table[a], max_params=RESNET20_PARAMS)
    pool = _admissible_s1(RESNET20_PARAMS)
    worst = min(pool, key=table.__getitem__)
    assert res.winner["arch"] == worst
    kd = res.pick["targets"]["kd"]
    assert kd["rank"] == 22 - sum(table[a] == table[worst] for a in pool) + 1
    assert kd["regret"] == round(max(table[a] for a in pool) - table[worst], 6) > 0
    assert res.to_dict()["pick"] == res.pick


def test_nb201_enumerates_the_admissible_cells_of_its_target_only() -> None:
    nb = get_space("nb201")
    truth = bench.nb201_accuracy("cifar10")
    res = run_search(
        "nb201",
        target="cifar10",
        objective=lambda a: float(len(a)),  # any cheap score
        algorithm="random",
        cycles=3,
        max_flops="30M",
    )
    pool = [a for a in nb.enumerate() if nb.cost(a, 10, 32).flops <= 30_000_000]
    pick = res.pick
    assert (pick["among"], pick["n"]) == ("admissible", len(pool))
    assert list(pick["targets"]) == ["cifar10"]  # cifar100 and ImageNet16-120 are other datasets
    assert pick["targets"]["cifar10"] == _expected(res.winner["arch"], pool, truth)


class LargeS1(S1Space):
    """S1 pretending to be too large to enumerate (like the ViT and ImageNet spaces)."""

    name = "s1-large"

    def enumerate(self) -> None:  # type: ignore[override]
        return None


def test_a_space_too_large_ranks_among_the_scored_candidates() -> None:
    table = bench.s1_accuracy("kd")
    res = run_search(
        LargeS1(), objective=lambda a: float(int(a)), algorithm="random", cycles=5, seed=2
    )
    scored = [c["arch"] for c in res.candidates]
    pick = res.pick
    assert (pick["among"], pick["n"]) == ("scored", len(scored))
    assert pick["targets"]["kd"] == _expected(res.winner["arch"], scored, table)
    assert "the 5 scored candidates (the space is too large to enumerate)" in pick_text(pick)
    assert "pick    " in res.summary()


def test_pick_report_by_hand() -> None:
    s1 = get_space("s1")
    table = bench.s1_accuracy("cls")
    pool = random.Random(0).sample(s1.enumerate(), 6)
    winner = pool[3]
    got = pick_report(winner, s1, "cls", pool, scored=[winner])
    assert got is not None and got["among"] == "admissible"
    assert got["targets"]["cls"] == _expected(winner, pool, table)
    assert got["targets"]["kd"] == _expected(winner, pool, bench.s1_accuracy("kd"))
    # A winner without ground truth, or a space without tables: nothing to show.
    assert pick_report("999", s1, "kd", pool, scored=[]) is None
