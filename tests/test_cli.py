"""The ``diswot`` command end to end: score, errors, and a small rank."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys

import pytest
import torch
from scipy import stats

from diswot.cli import main
from diswot.scoring import Scorer


def test_score_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["score", "--teacher", "resnet8", "--student", "313", "--batch-size", "8", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"score", "components", "params", "flops"}
    # The default objective (the default rule's proxy) is the score; DisWOT's terms are beside it.
    assert out["objective"] == "zico" and out["score"] == out["proxies"]["zico"]
    assert out["components"] == {}
    vals = out["proxies"]
    assert vals["diswot"] == pytest.approx(-(vals["ms"] + vals["mr"]))
    rc = main(["score", "--teacher", "resnet8", "--student", "313", "--batch-size", "8", "--json",
               "--proxy", "diswot"])  # fmt: skip
    paper = json.loads(capsys.readouterr().out)
    assert paper["objective"] == "diswot" and paper["score"] == vals["diswot"]
    assert paper["score"] == pytest.approx(-(paper["components"]["ms"] + paper["components"]["mr"]))
    assert out["flop_convention"] == "macs"
    assert out["params"] > 0 and out["flops"] > 0


def test_score_takes_a_search_result_json(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"winner": {"arch": "313", "score": -0.1}}))
    argv = ["score", "--teacher", "resnet8", "--batch-size", "8", "--json", "--student"]
    assert main([*argv, str(result)]) == 0
    via_file = json.loads(capsys.readouterr().out)
    assert main([*argv, "313"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert via_file["student"] == "313" and via_file["score"] == direct["score"]
    (tmp_path / "bad.json").write_text("{}")
    assert main([*argv, str(tmp_path / "bad.json")]) == 2
    assert "is not a search result.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["score", "--student", "9x9", "--teacher", "resnet8"], "unknown model"),
        (["score", "--student", "111", "--teacher", "resnet8", "--batch-size", "1"], "at least 2"),
        (["rank", "--space", "nope"], "unknown"),
        (["rank", "--space", "s1", "--proxy", "nope"], "known"),
        (["score", "--student", "111", "--device", "tpu"], "unknown device 'tpu'; accepted: auto"),
        (["score", "--student", "111", "--device", "meta"], "device 'meta' is not supported"),
        (["rank", "--space", "s1", "--device", "tpu"], "unknown device 'tpu'; accepted: auto"),
        (["rank", "--space", "s1", "--device", "meta", "--workers", "2"], "'meta' is not supp"),
        (["score", "--student", "111", "--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    rc = main([*argv, "--out", str(tmp_path / "o")] if argv[0] != "score" else argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("diswot: error:") and match in err
    assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_score_device_auto_is_cuda_if_available_else_cpu(capsys: pytest.CaptureFixture) -> None:
    base = ["score", "--teacher", "resnet8", "--student", "313", "--batch-size", "8", "--json"]
    assert main([*base, "--device", "auto"]) == 0
    auto = json.loads(capsys.readouterr().out)
    assert math.isfinite(auto["score"])
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cpu"]) == 0
        assert json.loads(capsys.readouterr().out)["score"] == auto["score"]


def test_score_text_shows_the_std_over_seeds(capsys: pytest.CaptureFixture) -> None:
    base = ["score", "--teacher", "resnet8", "--student", "313", "--batch-size", "8"]
    assert main([*base, "--seeds", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["std"]["diswot"] > 0
    assert main([*base, "--seeds", "2"]) == 0
    text = capsys.readouterr().out
    want = f"{res['proxies']['diswot']:.6f} ± {res['std']['diswot']:.6f} (std over 2 seeds)"
    assert want in text, text
    assert main(base) == 0  # one seed: no std to show
    assert "std over" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("student", "convention"),
    [
        ("313", "multiply-adds of conv/linear layers"),
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
            # The NB201 search's budget convention, so score and search print the same FLOPs.
            "multiply-adds of conv/linear layers for one 3x32x32 image, 10-class classifier",
        ),
    ],
)
def test_score_text_names_the_flop_convention_once(
    student: str, convention: str, capsys: pytest.CaptureFixture
) -> None:
    argv = ["score", "--teacher", "resnet8", "--student", student, "--batch-size", "8"]
    assert main([*argv, "--num-classes", "10"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "FLOPs" in x)
    assert re.fullmatch(rf"  params [\d,]+  FLOPs \d+\.\d\d M, {re.escape(convention)}", line), line


@pytest.mark.parametrize("command", ["score", "rank", "search"])
def test_threads_cap_the_scoring_and_are_restored(
    command: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    seen: list[int] = []
    build = Scorer.build

    def counting_build(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return build(self, *args, **kwargs)

    monkeypatch.setattr(Scorer, "build", counting_build)
    archs = tmp_path / "archs.txt"
    archs.write_text("111\n113\n131\n")
    out = tmp_path / "run"
    argv = {
        "score": ["score", "--student", "313"],
        "rank": ["rank", "--space", "s1", "--archs", str(archs), "--out", str(out)],
        "search": ["search", "--space", "s1", "--cycles", "3", "--out", str(out)],
    }[command]
    rest = ["--teacher", "resnet8", "--batch-size", "8", "--json"]
    rest += [] if command == "score" else ["--no-progress"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main([*argv, *rest, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 2  # restored after the command
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}  # every student and the teacher built under one thread
    if command == "search":  # applied, not a run setting: not stored, free to change on resume
        assert "threads" not in json.loads((out / "settings.json").read_text())["settings"]
        capsys.readouterr()
        assert main(["search", "--resume", str(out), "--threads", "2", "--no-progress"]) == 0


@pytest.mark.parametrize("module", ["diswot", "diswot.cli"])
def test_module_entry_point_runs(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("diswot ")


def test_rank_small_subset_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    archs = tmp_path / "archs.txt"
    archs.write_text("111\n113\n131\n311\n333\n")
    rc = main(
        [
            "rank", "--space", "s1", "--teacher", "resnet8", "--batch-size", "8",
            "--archs", str(archs), "--out", str(tmp_path / "r"), "--json", "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(c["proxy"], c["target"]): c for c in out["correlations"]}
    assert {("diswot", "kd"), ("params", "kd"), ("flops", "cls")} <= set(rows)
    # Params order these five as their KD accuracy does (111 < 311 < 131 < 113 < 333); the FLOPs of
    # 113, 131 and 311 tie, leaving 7 concordant pairs of 10 against CLS: tau-b = 7 / sqrt(7 * 10).
    assert rows[("params", "kd")]["kendall"] == pytest.approx(1.0)
    assert rows[("flops", "cls")]["kendall"] == pytest.approx(7 / math.sqrt(70))
    scores = list(csv.DictReader((tmp_path / "r" / "scores.csv").open()))
    tau = stats.kendalltau(
        [float(r["diswot"]) for r in scores], [float(r["acc_kd"]) for r in scores]
    )
    assert rows[("diswot", "kd")]["kendall"] == pytest.approx(tau.statistic)
    for name in ("scores.csv", "correlations.json", "scatter.png", "settings.json"):
        assert (tmp_path / "r" / name).exists()
