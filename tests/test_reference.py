"""Composite proxies ranked against a reference sample (diswot.proxies.composite,
diswot.scoring.reference): the mid-rank CDF by hand, the cache (reuse, growth by seeds, resume of a
half-built sample, a corrupt file), and the promise that one candidate scores the same number
alone (``diswot score``), inside a rank of other architectures and inside a search, on s1 and
nb201. Small references (``K`` of 5 or 6) and cheap terms keep it fast.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.proxies import PROXIES, ensemble_members, get_proxy, resolve_proxies
from diswot.proxies.composite import (
    COMPOSITES,
    DEFAULT_PROXY,
    Composite,
    log_cdf_sum,
    mid_rank_cdf,
    oriented,
    register_composite,
    resolve_aliases,
)
from diswot.scoring import Scorer
from diswot.scoring.reference import REFERENCE, ReferenceSample, cache_dir, load_reference
from diswot.spaces import get_space

pytestmark = pytest.mark.usefixtures("one_thread")

#: A cheap composite: a cost, a forward statistic and a gradient one (each its own orientation).
CHEAP = "t_cheap_ref"
if CHEAP not in COMPOSITES:
    register_composite(CHEAP, ("params", "nwot", "synflow"), size=6, seed=3)
#: The same terms with a teacher term that is lower-is-better (``mr``).
TEACHER = "t_teacher_ref"
if TEACHER not in COMPOSITES:
    register_composite(TEACHER, ("mr", "params"), size=5, seed=1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test builds its references in a folder of its own, never the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DISWOT_CACHE", str(folder))
    return folder


class Counting:
    """Counts the evaluations a Scorer runs (the reference builds score through ``evaluate``);
    with ``stop_after``, interrupts the build like a kill after that many."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> None:
        self.calls = 0
        self.stop_after = stop_after
        real = Scorer.evaluate

        def evaluate(scorer: Scorer, student, proxies, seed):  # noqa: ANN001, ANN202
            if self.stop_after is not None and self.calls >= self.stop_after:
                raise KeyboardInterrupt
            self.calls += 1
            return real(scorer, student, proxies, seed)

        monkeypatch.setattr(Scorer, "evaluate", evaluate)


def _scorer(space: str = "s1", teacher: str | None = None, seeds: int = 1) -> Scorer:
    sp = get_space(space)
    classes = sp.dataset(None).num_classes
    return Scorer(teacher, num_classes=classes, batch_size=8, seeds=seeds, space=sp)


# -- the maths -------------------------------------------------------------------------------------
def test_mid_rank_cdf_by_hand() -> None:
    ref = np.sort(oriented([3.0, 1.0, 2.0, 2.0], 1.0))
    assert mid_rank_cdf(2.0, ref) == pytest.approx((1 + 0.5 * 2 + 0.5) / 5)  # ties count half
    assert mid_rank_cdf(0.0, ref) == pytest.approx(0.5 / 5)  # below all: never 0
    assert mid_rank_cdf(9.0, ref) == pytest.approx(4.5 / 5)  # above all: never 1
    assert mid_rank_cdf(1.5, ref) == pytest.approx(1.5 / 5)


def test_non_finite_values_rank_lowest_tied_with_each_other() -> None:
    ref = np.sort(oriented([math.nan, 1.0, math.inf, 2.0], 1.0))  # nan and inf: -inf
    assert list(ref[:2]) == [-math.inf, -math.inf]
    low = float(oriented([math.nan], 1.0)[0])
    assert mid_rank_cdf(low, ref) == pytest.approx((0 + 0.5 * 2 + 0.5) / 5)
    assert mid_rank_cdf(-1e300, ref) == pytest.approx((2 + 0.5) / 5)  # finite beats non-finite


def test_orientation_and_the_log_sum() -> None:
    # A lower-is-better term is negated first: the smallest raw value ranks highest.
    ref = np.sort(oriented([1.0, 2.0, 3.0], -1.0))
    assert mid_rank_cdf(float(oriented([1.0], -1.0)[0]), ref) == pytest.approx(3.0 / 4)
    cols = [np.sort(oriented([1.0, 2.0, 3.0], 1.0)), ref]
    got = log_cdf_sum([2.0, float(oriented([3.0], -1.0)[0])], cols)
    assert got == pytest.approx(math.log(2.0 / 4) + math.log(1.0 / 4))


def test_a_sample_aggregates_raw_term_values() -> None:
    comp = Composite("hand", ("params", "ms"), size=4)  # ms: lower is better
    assert comp.signs == (1.0, -1.0)
    values = np.array([[1.0, 0.4], [2.0, 0.3], [3.0, math.nan], [4.0, 0.1]])
    sample = ReferenceSample(comp, {"k": 1}, ["a", "b", "c", "d"], {0: values})
    assert sample.percentiles(0, [2.0, 0.3]) == pytest.approx([2.0 / 5, 3.0 / 5])
    # A NaN ms ties with the reference's NaN at the bottom.
    assert sample.percentiles(0, [5.0, math.nan]) == pytest.approx([4.5 / 5, 1.0 / 5])
    assert sample.aggregate(0, [2.0, 0.3]) == pytest.approx(math.log(0.4) + math.log(0.6))
    with pytest.raises(KeyError, match="seed 1"):
        sample.aggregate(1, [2.0, 0.3])


def test_a_composite_registers_as_a_proxy_with_its_terms_needs() -> None:
    spec = get_proxy(CHEAP)
    assert spec.needs_space and spec.higher_is_better and spec.needs_grad  # synflow
    assert not spec.needs_teacher
    assert get_proxy(TEACHER).needs_teacher
    for name in ("az_nas", "vkdnw_agg"):  # the published aggregates, population-free
        assert get_proxy(name).needs_space
    assert not any(PROXIES.get(n).needs_space for n in resolve_proxies("all"))
    with pytest.raises(DiswotError, match="twice"):
        register_composite("t_bad", ("params", "params"))
    with pytest.raises(DiswotError, match="composite 't_cheap_ref' as a term"):
        register_composite("t_bad", ("params", CHEAP))
    with pytest.raises(DiswotError, match="unknown proxy"):
        register_composite("t_bad", ("nope",))


def test_default_names_one_rule() -> None:
    assert resolve_proxies("default") == [DEFAULT_PROXY]
    assert ensemble_members("default+flops") == [DEFAULT_PROXY, "flops"]
    assert resolve_aliases("default,flops+default") == f"{DEFAULT_PROXY},flops+{DEFAULT_PROXY}"


# -- the cache ---------------------------------------------------------------------------------------
def test_without_a_space_the_error_names_the_flag() -> None:
    scorer = Scorer(None, num_classes=100, batch_size=8)
    with pytest.raises(DiswotError, match="pass --space NAME") as err:
        scorer.score("313", [CHEAP])
    assert "\n" not in str(err.value)


def test_built_once_then_read(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    count = Counting(monkeypatch)
    first = _scorer().reference(CHEAP)
    assert count.calls == 6 and first.size == 6
    files = sorted(p.name for p in (private_cache / "references").iterdir())
    assert files == [f"{CHEAP}-{first.hash}.json", f"{CHEAP}-{first.hash}.lock"]  # journal gone
    again = _scorer().reference(CHEAP)  # a new scorer: read from the cache, nothing rescored
    assert count.calls == 6
    assert again.archs == first.archs and np.array_equal(again.values[0], first.values[0])
    rng, s1 = random.Random(3), get_space("s1")
    assert first.archs == [s1.sample(rng) for _ in range(6)]  # the space's own seeded draws
    assert cache_dir() == private_cache


def test_more_seeds_grow_the_same_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    one = _scorer().reference(CHEAP)
    count = Counting(monkeypatch)
    two = _scorer(seeds=2).reference(CHEAP)
    assert count.calls == 6  # only seed 1 was scored
    assert two.hash == one.hash and sorted(two.values) == [0, 1]
    assert np.array_equal(two.values[0], one.values[0])


def test_a_killed_build_continues_where_it_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_cache: Path
) -> None:
    monkeypatch.setenv("DISWOT_CACHE", str(tmp_path / "clean"))
    clean = _scorer().reference(CHEAP)
    monkeypatch.setenv("DISWOT_CACHE", str(private_cache))
    with monkeypatch.context() as m:
        Counting(m, stop_after=4)
        with pytest.raises(KeyboardInterrupt):
            _scorer().reference(CHEAP)
    journal = private_cache / "references" / f"{CHEAP}-{clean.hash}.jsonl"
    assert len(journal.read_text().splitlines()) == 4
    assert not journal.with_suffix(".json").exists()
    with journal.open("a") as fh:
        fh.write('{"seed": 0, "index": 4, "arch": "1')  # killed mid-write
    count = Counting(monkeypatch)
    resumed = _scorer().reference(CHEAP)
    assert count.calls == 2  # the torn record and the last one
    assert resumed.archs == clean.archs and np.array_equal(resumed.values[0], clean.values[0])
    assert not journal.exists()


def test_a_corrupt_cache_file_is_rebuilt_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    built = _scorer().reference(CHEAP)
    path = cache_dir() / "references" / f"{CHEAP}-{built.hash}.json"
    path.write_text('{"format": 1, "values": ')
    capsys.readouterr()
    count = Counting(monkeypatch)
    rebuilt = _scorer().reference(CHEAP)
    assert count.calls == 6
    err = capsys.readouterr().err
    assert "is unusable" in err and "rebuilding it" in err
    assert np.array_equal(rebuilt.values[0], built.values[0])
    json.loads(path.read_text())  # whole again


def test_the_key_follows_what_changes_values() -> None:
    base = _scorer().reference(CHEAP)
    assert base.key["teacher"] is None  # no term reads the teacher: one sample for every teacher
    with_teacher = Scorer(
        "resnet8", num_classes=100, batch_size=8, space=get_space("s1")
    ).reference(CHEAP)
    assert with_teacher.hash == base.hash
    other_batch = Scorer(None, num_classes=100, batch_size=6, space=get_space("s1"))
    assert other_batch.reference(CHEAP).hash != base.hash
    t8 = Scorer("resnet8", num_classes=100, batch_size=8, space=get_space("s1"))
    t14 = Scorer("resnet14", num_classes=100, batch_size=8, space=get_space("s1"))
    assert t8.reference(TEACHER).key["teacher"] == "resnet8"
    assert t8.reference(TEACHER).hash != t14.reference(TEACHER).hash


def test_a_value_is_its_terms_ranked_against_the_sample() -> None:
    scorer = _scorer()
    res = scorer.score("313", [CHEAP, "params", "nwot", "synflow"])
    sample = scorer.reference(CHEAP)
    terms = [res.values[t] for t in ("params", "nwot", "synflow")]
    assert res.values[CHEAP] == sample.aggregate(0, terms)
    # A network of the sample ties with itself: it gets its mid-rank, never 0 or 1.
    inside = sample.archs[0]
    p = sample.percentiles(0, list(sample.values[0][0]))
    assert all(0 < x < 1 for x in p)
    assert _scorer().score(inside, [CHEAP]).values[CHEAP] == pytest.approx(
        sum(math.log(x) for x in p)
    )


def test_load_reference_takes_a_name_or_a_composite() -> None:
    scorer = _scorer()
    a = load_reference(scorer, CHEAP, [0])
    b = load_reference(scorer, COMPOSITES.get(CHEAP), [0])
    assert a.hash == b.hash and a.to_dict() == b.to_dict()
    assert REFERENCE == "reference.json"


# -- through the CLI -----------------------------------------------------------------------------
def _score_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["score", "--batch-size", "8", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_score_says_what_default_resolved_to(capsys: pytest.CaptureFixture[str]) -> None:
    out = _score_json(capsys, "--student", "313", "--teacher", "resnet8", "--proxy", "default")
    assert (out["proxy"], out["resolved"]) == ("default", DEFAULT_PROXY)
    named = _score_json(
        capsys, "--student", "313", "--teacher", "resnet8", "--proxy", DEFAULT_PROXY
    )
    assert (named["proxy"], named["resolved"]) == (DEFAULT_PROXY, DEFAULT_PROXY)
    assert out["proxies"][DEFAULT_PROXY] == named["proxies"][DEFAULT_PROXY]
    plain = _score_json(capsys, "--student", "313", "--teacher", "resnet8")
    assert (plain["proxy"], plain["resolved"]) == ("default", "zico")  # the commands' default


def test_score_needs_a_space_for_a_composite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--student", "313", "--batch-size", "8", "--proxy", CHEAP]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diswot: error:") and "--space" in err and "\n" not in err


# -- one candidate, one number: alone, in a rank, in a search ----------------------------------------
def _candidates(folder: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines()]
    return {r["arch"]: r["value"] for r in rows}


def _ranked(folder: Path, name: str) -> dict[str, float]:
    rows = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    return {r["arch"]: r["values"][name] for r in rows if r["seed"] == 0}


@pytest.mark.parametrize(
    ("space", "search", "others"),
    [
        (
            "s1",
            ["--max-params", "278324"],  # ResNet20's size: exhaustive over the 22 that fit
            ["777", "135", "351", "513"],
        ),
        (
            "nb201",
            ["--target", "cifar10", "--algorithm", "random", "--cycles", "3"],
            [
                "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|",
                "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|none~1|none~2|",
            ],
        ),
    ],
)
def test_one_candidate_scores_the_same_alone_in_a_rank_and_in_a_search(
    space: str,
    search: list[str],
    others: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    probe = ["--teacher", "resnet8", "--batch-size", "8", "--proxy", CHEAP]
    s_dir, r_dir = tmp_path / "search", tmp_path / "rank"
    argv = ["search", "--space", space, *search, *probe, "--out", str(s_dir), "--no-progress"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    in_search = _candidates(s_dir)
    assert result["settings"]["references"][CHEAP]["size"] == 6
    assert (
        json.loads((s_dir / REFERENCE).read_text())[CHEAP]["hash"]
        == (result["settings"]["references"][CHEAP]["hash"])
    )
    picked = list(in_search)[:3]  # ranked among architectures the search never saw
    (tmp_path / "archs.txt").write_text("\n".join([*others, *picked]) + "\n")
    target = ["--target", "cifar10"] if space == "nb201" else []
    argv = ["rank", "--space", space, *target, "--archs", str(tmp_path / "archs.txt"), *probe]
    assert main([*argv, "--out", str(r_dir), "--no-progress", "--json"]) == 0
    capsys.readouterr()
    in_rank = _ranked(r_dir, CHEAP)
    for arch in picked:
        assert in_rank[arch] == in_search[arch], arch
    classes = ["--num-classes", "10"] if space == "nb201" else []
    one = ["--student", picked[0], "--space", space, *classes, *probe]
    alone = _score_json(capsys, *one)
    assert alone["proxies"][CHEAP] == in_search[picked[0]]
    assert alone["references"][CHEAP]["hash"] == result["settings"]["references"][CHEAP]["hash"]
    # The search's result.json carries its space and settings: no --space needed.
    winner = _score_json(capsys, "--student", str(s_dir / "result.json"))
    assert winner["proxies"][CHEAP] == result["winner"]["value"] == in_search[winner["student"]]


def test_a_resumed_search_scores_against_its_own_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], private_cache: Path
) -> None:
    out = tmp_path / "s"
    base = ["search", "--space", "s1", "--teacher", "resnet8", "--batch-size", "8"]
    base += ["--proxy", CHEAP, "--algorithm", "random", "--no-progress"]
    assert main([*base, "--cycles", "3", "--out", str(out)]) == 0
    first = _candidates(out)
    assert "scoring the t_cheap_ref reference sample" in capsys.readouterr().err
    for f in (private_cache / "references").iterdir():  # the cache is lost ...
        f.unlink()
    assert main([*base, "--cycles", "5", "--resume", str(out)]) == 0
    # ... and put back from the run folder's copy: nothing rescored, the same numbers.
    assert "reference sample" not in capsys.readouterr().err
    assert {a: v for a, v in _candidates(out).items() if a in first} == first
    assert len(list((private_cache / "references").glob("*.json"))) == 1
    settings = json.loads((out / "settings.json").read_text())["settings"]
    settings["references"][CHEAP]["hash"] = "0" * 16  # a folder scored against another sample
    (out / "settings.json").write_text(json.dumps({"settings": settings}))
    assert main([*base, "--cycles", "6", "--resume", str(out)]) == 2
    assert "against a reference sample with other" in capsys.readouterr().err


def test_search_says_what_default_resolved_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "--space", "s1", "--teacher", "resnet8", "--batch-size", "8"]
    argv += ["--objective", "default", "--max-params", "120000", "--no-progress", "--json"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["proxy"], out["resolved"]) == ("default", DEFAULT_PROXY)
    assert out["settings"]["objective"] == DEFAULT_PROXY and out["settings"]["references"] is None
    saved = json.loads((tmp_path / "s" / "result.json").read_text())
    assert (saved["proxy"], saved["resolved"]) == ("default", DEFAULT_PROXY)


def test_rank_says_what_default_resolved_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rank", "--space", "s1", "--teacher", "resnet8", "--batch-size", "8", "--sample", "10"]
    argv += ["--proxy", "default,flops+default", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["proxy"] == "default,flops+default"
    assert out["resolved"] == f"{DEFAULT_PROXY},flops+{DEFAULT_PROXY}"
    assert {c["proxy"] for c in out["correlations"]} >= {DEFAULT_PROXY, f"flops+{DEFAULT_PROXY}"}


#: A space file whose import registers the cheap composite: how a composite of one's own reaches
#: spawned workers (they import the space's file again; the registry of this process stays here).
SPACE_FILE = f"""
from diswot.proxies.composite import COMPOSITES, register_composite
from diswot.spaces.s1 import S1Space

if "{CHEAP}" not in COMPOSITES:
    register_composite("{CHEAP}", ("params", "nwot", "synflow"), size=6, seed=3)


class Space(S1Space):
    pass
"""


def test_shards_merged_and_parallel_workers_rank_like_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cheap_space.py").write_text(SPACE_FILE)
    space = f"{tmp_path / 'cheap_space.py'}:Space"
    base = ["rank", "--space", space, "--teacher", "none", "--proxy", CHEAP, "--batch-size", "8"]
    base += ["--sample", "10", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    serial = _ranked(tmp_path / "one", CHEAP)
    for i in (0, 1):
        assert main([*base, "--shard", f"{i}/2", "--out", str(tmp_path / f"part{i}")]) == 0
    shards = [str(tmp_path / f"part{i}") for i in (0, 1)]
    assert main(["rank", "--merge", *shards, "--out", str(tmp_path / "merged")]) == 0
    assert main([*base, "--workers", "2", "--out", str(tmp_path / "workers")]) == 0
    err = capsys.readouterr().err
    assert err.count("scoring the t_cheap_ref reference sample") == 1  # built once, then read
    recorded = json.loads((tmp_path / "one" / "settings.json").read_text())["settings"]
    for folder in ("merged", "workers"):
        assert _ranked(tmp_path / folder, CHEAP) == serial, folder
        settings = json.loads((tmp_path / folder / "settings.json").read_text())["settings"]
        assert settings["references"] == recorded["references"], folder
        assert CHEAP in json.loads((tmp_path / folder / REFERENCE).read_text())


#: Large enough that a build is still running when it is killed; cheap terms keep it short.
KILLED = "t_killed_ref"
if KILLED not in COMPOSITES:
    register_composite(KILLED, ("params", "nwot"), size=150, seed=5)


def test_a_build_killed_with_sigkill_continues(
    monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    code = (
        "from diswot.proxies.composite import register_composite as r\n"
        f"r({KILLED!r}, ('params', 'nwot'), size=150, seed=5)\n"
        "from diswot.scoring import Scorer\nfrom diswot.spaces import get_space\n"
        "Scorer(None, num_classes=100, batch_size=8, space=get_space('s1'))"
        f".reference({KILLED!r})\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    folder = private_cache / "references"
    deadline = time.monotonic() + 120
    lines = 0
    while time.monotonic() < deadline and proc.poll() is None:
        journals = list(folder.glob("*.jsonl")) if folder.is_dir() else []
        lines = len(journals[0].read_bytes().split(b"\n")) - 1 if journals else 0
        if lines >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build ended before it could be killed"
    assert not list(folder.glob("*.json"))  # no sample yet: only its journal
    kept = len(_journal_lines(folder))
    assert kept >= lines
    count = Counting(monkeypatch)
    sample = _scorer().reference(KILLED)
    assert count.calls == 150 - kept  # what the killed build had recorded is not scored again
    monkeypatch.setenv("DISWOT_CACHE", str(private_cache.parent / "clean"))
    assert np.array_equal(_scorer().reference(KILLED).values[0], sample.values[0])


def _journal_lines(folder: Path) -> list[dict]:
    """The whole records of the one build journal in ``folder`` (a torn last line left out)."""
    (journal,) = folder.glob("*.jsonl")
    out = []
    for line in journal.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out
