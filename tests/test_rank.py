"""``diswot rank``: outputs, the JSON contract, caching, ensembles, NaN accounting, --archs files,
shards and merge, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from scipy.stats import kendalltau

from diswot.cli import main
from diswot.models.nb201 import naslib_to_arch
from diswot.proxies import PROXIES, ProxySpec
from diswot.rank import load_scores, merge_runs, read_archs_file, run_rank
from diswot.rank.naslib import naslib_cells
from diswot.spaces import get_space

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


S1_ARCHS = ["111", "135", "333", "513", "731"]
FAST = dict(teacher="resnet8", batch_size=8, progress=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_s1_run_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_rank(
        "s1", proxies="diswot,l2_norm,diswot+params", seeds=2, archs=S1_ARCHS, out_dir=out, **FAST
    )
    assert res.targets == ["kd", "cls"]  # both S1 targets share the dataset
    assert res.proxies == ["diswot", "l2_norm", "params", "flops", "diswot+params"]
    for name in ("table.md", "scores.csv", "correlations.json", "scatter.png", "settings.json"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["arch"] for r in rows] == S1_ARCHS
    assert {"diswot", "diswot@seed0", "diswot@seed1", "diswot+params@seed1", "acc_kd"} <= set(
        rows[0]
    )
    mean = (float(rows[0]["diswot@seed0"]) + float(rows[0]["diswot@seed1"])) / 2
    assert float(rows[0]["diswot"]) == pytest.approx(mean)
    corr = json.loads((out / "correlations.json").read_text())
    assert len(corr) == 5 * 2
    stats = ("kendall", "spearman", "pearson", "precision_at_top", "best_rank_at_top")
    for c in corr:
        assert all(math.isfinite(c[key]) for key in stats)
        if c["proxy"] in ("params", "flops"):  # the same scores under every seed
            assert all(c[f"{key}_std"] == 0.0 for key in stats)
        assert c["n"] == 5 and c["n_nonfinite"] == 0
    # diswot / kd: the mean and population std of the two seeds' taus, recomputed with scipy.
    truth = [float(r["acc_kd"]) for r in rows]
    taus = [kendalltau([float(r[f"diswot@seed{s}"]) for r in rows], truth)[0] for s in (0, 1)]
    row = next(c for c in corr if (c["proxy"], c["target"]) == ("diswot", "kd"))
    assert row["kendall"] == pytest.approx(sum(taus) / 2)
    assert row["kendall_std"] == pytest.approx(abs(taus[0] - taus[1]) / 2)
    table = (out / "table.md").read_text()
    assert "**s1 / kd**" in table and "**s1 / cls**" in table and "`diswot+params`" in table
    # Shared passes are timed once, under their own names, not charged to the first proxy.
    assert {"forward", "teacher"} <= set(res.pass_seconds) and "shared passes" in table
    rec = _lines(out / "scores.jsonl")[0]
    assert {"pass:forward", "diswot", "l2_norm"} <= set(rec["seconds"])
    # params is deterministic: identical over seeds, so its std is exactly 0.
    p = next(c for c in corr if c["proxy"] == "params" and c["target"] == "kd")
    assert p["kendall_std"] == 0


def test_rerun_computes_only_new_proxies_and_seeds(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_rank("s1", proxies="l2_norm", seeds=1, archs=S1_ARCHS[:3], out_dir=out, **FAST)
    first = _lines(out / "scores.jsonl")
    assert len(first) == 3
    res = run_rank(
        "s1", proxies="l2_norm,synflow", seeds=2, archs=S1_ARCHS[:3], out_dir=out, **FAST
    )
    recs = _lines(out / "scores.jsonl")
    new = recs[3:]
    assert len(new) == 3 + 3  # seed 0: only synflow; seed 1: everything
    assert all(set(r["values"]) == {"synflow"} for r in new if r["seed"] == 0)
    assert all(
        set(r["values"]) == {"l2_norm", "synflow", "params", "flops"} for r in new if r["seed"] == 1
    )
    # Cached values are reused verbatim.
    assert res.scores["111"][0]["l2_norm"] == first[0]["values"]["l2_norm"]
    # A killed run's half line is dropped on reload.
    with (out / "scores.jsonl").open("a") as fh:
        fh.write('{"arch": "111", "se')
    assert set(load_scores(out / "scores.jsonl")) == set(S1_ARCHS[:3])


def test_settings_that_change_scores_need_a_new_folder(tmp_path: Path) -> None:
    run_rank("s1", proxies="l2_norm", archs=S1_ARCHS[:2], out_dir=tmp_path, **FAST)
    with pytest.raises(Exception, match="different batch_size"):
        run_rank(
            "s1",
            proxies="l2_norm",
            archs=S1_ARCHS[:2],
            out_dir=tmp_path,
            teacher="resnet8",
            batch_size=4,
            progress=False,
        )


def test_nonfinite_scores_are_counted_and_ranked_last(monkeypatch: pytest.MonkeyPatch) -> None:
    def flaky(probe) -> float:  # noqa: ANN001
        return math.nan if probe.student == "731" else float(len(probe.student))

    monkeypatch.setitem(PROXIES._items, "flaky", ProxySpec("flaky", flaky, doc="test"))
    res = run_rank("s1", proxies="flaky", seeds=2, archs=S1_ARCHS, **FAST)
    row = next(c for c in res.correlations if c["proxy"] == "flaky" and c["target"] == "kd")
    assert row["n_nonfinite"] == 2  # one architecture, two seeds
    assert "| `flaky` |" in res.table()
    assert math.isnan(res.mean_column("flaky")[S1_ARCHS.index("731")])


def test_json_contract_and_default_proxies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archs = tmp_path / "archs.txt"
    archs.write_text("# S1 codes\n111\n\n333  # ResNet20\n731\n")
    code = main(
        ["rank", "--space", "s1", "--archs", str(archs), "--teacher", "resnet8", "--batch-size",
         "8", "--out", str(tmp_path / "o"), "--json", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["n_archs"] == 3 and obj["space"] == "s1"
    got = {(c["proxy"], c["target"]) for c in obj["correlations"]}
    assert got == {
        (p, t) for p in ("zico", "diswot", "ms", "mr", "params", "flops") for t in ("kd", "cls")
    }
    c = obj["correlations"][0]
    assert {"proxy", "target", "kendall", "spearman"} <= set(c)


def test_nb201_archs_file_with_naslib_tuples_and_reference_column(tmp_path: Path) -> None:
    f = tmp_path / "cells.txt"
    string = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    tuples = [str(t) for t in naslib_cells(10, seed=3)]
    f.write_text("\n".join([*tuples, string]) + "\n")
    archs = read_archs_file(f, get_space("nb201"))
    assert archs[-1] == string and len(archs) == 11
    assert archs[0] == naslib_to_arch(naslib_cells(10, seed=3)[0])
    res = run_rank(
        "nb201", teacher="none", proxies="l2_norm", target="cifar10", archs=f, batch_size=4,
        init="default", progress=False, out_dir=tmp_path / "o",
    )  # fmt: skip
    assert res.archs == archs and res.targets == ["cifar10"]
    rows = list(csv.DictReader((tmp_path / "o" / "scores.csv").open()))
    assert [r["arch"] for r in rows] == archs
    ref = {c["proxy"]: c for c in res.correlations if "reference_kendall" in c}
    assert set(ref) == {"l2_norm", "params", "flops"}  # NASLib publishes these three
    assert ref["params"]["reference_n"] == 10 and ref["params"]["reference_source"] == "NASLib"
    # Our params rank the 10 NASLib cells exactly as NASLib's params do.
    sub = run_rank(
        "nb201", teacher="none", proxies="params", target="cifar10", archs=archs[:10],
        batch_size=4, progress=False,
    )  # fmt: skip
    params = next(c for c in sub.correlations if c["proxy"] == "params")
    assert params["kendall"] == pytest.approx(params["reference_kendall"])
    assert "reference Kendall (cells)" in res.table()


def test_shards_merge_to_the_unsharded_result(tmp_path: Path) -> None:
    kw = dict(proxies="l2_norm", seeds=2, archs=S1_ARCHS, **FAST)
    whole = run_rank("s1", out_dir=tmp_path / "whole", **kw)
    for i in range(2):
        part = run_rank("s1", shard=f"{i}/2", out_dir=tmp_path / f"s{i}", **kw)
        assert part.archs == S1_ARCHS[i::2]
    with pytest.raises(Exception, match="not fully scored"):
        merge_runs([tmp_path / "s0"], tmp_path / "m0")
    merged = merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert merged.archs == S1_ARCHS
    for a, b in zip(whole.correlations, merged.correlations):
        assert a["proxy"] == b["proxy"] and a["kendall"] == pytest.approx(b["kendall"])
    assert len(_lines(tmp_path / "merged" / "scores.jsonl")) == len(S1_ARCHS) * 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--proxy", "synflw"], "unknown proxy 'synflw'; known: .*zen"),
        (["--proxy", "kd", "--teacher", "none"], "proxy 'kd' needs a teacher"),
        (["--sample", "0"], "--sample must be at least 1"),
        (["--target", "cifar10"], "space 's1' has no target 'cifar10'; known: kd, cls"),
        (["--space", "nb201", "--target", "kd"], "space 'nb201' has no target 'kd'"),
        (["--space", "nb201", "--target", "cifar10,cifar100"], "rank them in separate runs"),
        (["--space", "nope"], "unknown space 'nope'; known: "),
        (["--shard", "2/2"], "--shard i/N needs 0 <= i < N"),
        (["--proxy", "diswot+"], "ensemble 'diswot\\+' needs two or more"),
        (["--merge", "/nonexistent/dir"], "is not a rank run folder"),
    ],
)
def test_bad_input_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    # --threads: no thread note on stderr on a busy machine, only the error.
    code = main(["rank", *argv, "--out", str(tmp_path / "o"), "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("diswot: error: ") and "\n" not in err
    assert __import__("re").search(message, err), err


def test_empty_archs_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "empty.txt"
    f.write_text("# nothing\n\n")
    assert main(["rank", "--archs", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "lists no architectures" in capsys.readouterr().err
    f.write_text("111\n999\n")
    assert main(["rank", "--archs", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--data", "cifar100", "--data-root", "/nonexistent/cifar"], "cifar100 not found"),
        (
            ["--data", "cifar100", "--data-root", "/nonexistent/cifar", "--workers", "2"],
            "not found",
        ),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--teacher", "resnet9000"], "unknown model 'resnet9000'"),
    ],
)
def test_failed_start_leaves_no_folder_and_a_retry_works(
    tmp_path: Path, capsys: pytest.CaptureFixture, bad: list[str], message: str
) -> None:
    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(S1_ARCHS) + "\n")
    out = tmp_path / "run"
    base = ["rank", "--space", "s1", "--archs", str(archs), "--out", str(out), "--no-progress"]
    base += ["--threads", "1"]  # no thread note on stderr on a busy machine, only the error
    assert main([*base, "--teacher", "resnet14", "--batch-size", "8", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diswot: error: ") and message in err and "\n" not in err
    assert not out.exists()
    # The same folder with other settings (another teacher): nothing of the failed start refuses it.
    assert main([*base, "--teacher", "resnet8", "--batch-size", "8", "--json"]) == 0
    assert json.loads((out / "settings.json").read_text())["settings"]["teacher"] == "resnet8"


def test_help_documents_teacher_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapping inside the phrase
    with pytest.raises(SystemExit):
        main(["rank", "--help"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "  --teacher TEACHER" in x)
    assert "'none' ranks teacher-free proxies only" in line


def test_settings_record_the_data_root(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_rank(
        "s1", proxies="l2_norm", archs=S1_ARCHS[:2], out_dir=out, data_root=str(tmp_path), **FAST
    )
    meta = json.loads((out / "settings.json").read_text())
    assert meta["settings"]["data_root"] == str(tmp_path)
    # Not a fixed setting: the same run pointed at a moved dataset goes on.
    run_rank("s1", proxies="l2_norm", archs=S1_ARCHS[:2], out_dir=out, **FAST)


def test_python_lists_of_archs_refuse_repeats_and_teachers_must_be_names() -> None:
    from diswot.errors import DiswotError
    from diswot.models import create_model

    with pytest.raises(DiswotError, match=r"archs\[2\] repeats the architecture of archs\[0\]"):
        run_rank("s1", archs=["111", "333", "111"], progress=False)
    with pytest.raises(DiswotError, match="run_rank takes a teacher name"):
        run_rank("s1", teacher=create_model("resnet8"), archs=["111", "333"], progress=False)
