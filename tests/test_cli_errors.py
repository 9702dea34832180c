"""Bad input and unhappy endings on the command line: one line on stderr, exit 2, nothing lost.

What a user's first hour turns up: an ``--out`` that is a file, a search whose proxy is NaN for
every candidate, Ray options without Ray, an interrupted search that should say how to resume,
output piped into ``head``, and a machine that runs out of memory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from diswot.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str], match: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("diswot: error:") and match in err, err
    return err


@pytest.mark.parametrize("command", ["rank", "search"])
def test_an_out_that_is_a_file_or_cannot_be_made_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    base = [command, "--space", "s1", "--batch-size", "4", "--no-progress"]
    base += ["--sample", "3"] if command == "rank" else ["--cycles", "2"]
    assert main([*base, "--out", str(afile)]) == 2
    _one_line_error(capsys, f"--out {afile} is a file, not a folder")
    assert main([*base, "--out", str(afile / "under")]) == 2
    _one_line_error(capsys, "cannot create the run folder")
    assert afile.read_text() == "not a folder"


def test_a_search_without_a_finite_score_keeps_its_files_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # epe_nas is undefined when every class of a 120-class task appears once in a batch of 16.
    out = tmp_path / "nan"
    argv = ["search", "--space", "nb201", "--target", "ImageNet16-120", "--proxy", "epe_nas",
            "--cycles", "3", "--population", "3", "--sample-size", "2", "--batch-size", "16",
            "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    _one_line_error(capsys, "all 3 candidates scored NaN or infinite with epe_nas")
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "result.json").read_text())["winner"]["score"] is None
    # A proxy that is constant over the space (epe_nas with 100 classes and 16 samples) picks
    # the first candidate: the search says so.
    argv = ["search", "--space", "s1", "--proxy", "epe_nas", "--cycles", "3", "--batch-size",
            "16", "--no-progress", "--out", str(tmp_path / "flat")]  # fmt: skip
    assert main(argv) == 0
    assert "all 3 candidates scored 0 with epe_nas, so the winner is just the first" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--address", "10.0.0.1:6379"], "--address applies to Ray only; add --backend ray"),
        (["--gpus-per-task", "1"], "--gpus-per-task applies to Ray only"),
        (["--address", "x:1", "--gpus-per-task", "1"], "--address and --gpus-per-task apply"),
        (["--backend", "ray", "--gpus-per-task", "-1"], "--gpus-per-task must be 0 or more"),
    ],
)
@pytest.mark.parametrize("command", ["rank", "search"])
def test_ray_options_are_checked_before_any_work(
    command: str, extra: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert main([command, "--space", "s1", *extra, "--out", str(out)]) == 2
    _one_line_error(capsys, match)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["rank", "--space", "nb201", "--sample", "99999"], "holds 2 to 15625 cells (all)"),
        (["rank", "--space", "s1", "--sample", "1"], "needs at least 2 architectures"),
        (["rank", "--space", "s1", "--data-root", "/tmp"], "add --data cifar10 or --data"),
        (["search", "--space", "s1", "--data-root", "/tmp"], "add --data cifar10 or --data"),
        (["rank", "--space", "s1", "--seeds", "0"], "--seeds must be at least 1"),
    ],
)
def test_options_that_would_be_ignored_or_misnamed(
    argv: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, match)


def test_s1_rank_honours_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["rank", "--space", "s1", "--teacher", "resnet8", "--batch-size", "4", "--sample", "5",
            "--no-progress", "--json", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n_archs"] == 5


def test_resuming_with_another_space_names_the_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    base = ["--cycles", "2", "--batch-size", "4", "--no-progress"]
    assert main(["search", "--space", "nb201", *base, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["search", "--resume", str(out), "--space", "s1"]) == 2
    _one_line_error(capsys, "holds a search on space 'nb201' (now 's1')")


def test_evaluate_given_a_folder_names_its_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    assert main(["evaluate", "--ckpt", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a folder (it holds last.pt); pass the path of a .pt")


def test_quick_default_survives_options_that_only_say_how(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import diswot.cli.search as search_cli

    seen: dict = {}

    def fake_run_search(space: str, **kwargs: object) -> None:
        seen.update(space=space, **kwargs)
        kwargs["on_start"](Path("x"))  # type: ignore[operator]  # the run was checked
        raise SystemExit(0)  # stop before any work

    monkeypatch.setattr(search_cli, "run_search", fake_run_search)
    with pytest.raises(SystemExit):
        main(["search", "--seed", "3", "--out", "x", "--threads", "1"])
    assert seen["cycles"] == 100 and seen["batch_size"] == 16 and seen["seed"] == 3
    assert seen["max_flops"] == "100M"
    assert "running the quick default" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", "--space", "s1", "--teacher", "resnet20"])
    err = capsys.readouterr().err
    assert seen["cycles"] is None and seen["batch_size"] == 64
    assert "diswot search: --space s1 --teacher resnet20 --target kd --algorithm exhaustive " in err
    assert "(every admissible student; no size budget)" in err


def _failing(monkeypatch: pytest.MonkeyPatch, exc: BaseException, folder: str | None = None):
    import diswot.cli.rank as rank_cli
    import diswot.cli.search as search_cli

    def run(args: argparse.Namespace) -> int:
        if folder:
            args.folder = folder
        raise exc

    monkeypatch.setattr(rank_cli, "run", run)
    monkeypatch.setattr(search_cli, "run", run)


def test_interrupts_say_how_to_continue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing(monkeypatch, KeyboardInterrupt(), folder="runs/s")
    assert main(["search"]) == 130
    assert capsys.readouterr().err.strip().endswith("continue with: diswot search --resume runs/s")
    assert main(["rank", "--space", "s1"]) == 130
    assert "rerun the same command to continue" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "code", "match"),
    [
        (PermissionError(13, "Permission denied", "/x/y"), 2, "Permission denied: /x/y"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: 9 GB"), 2, "out of memory"),
        (MemoryError(), 2, "lower --batch-size"),
        (BrokenPipeError(), 1, None),
    ],
)
def test_environment_failures_are_one_line(
    exc: BaseException,
    code: int,
    match: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _failing(monkeypatch, exc)
    assert main(["rank", "--space", "s1"]) == code
    err = capsys.readouterr().err.strip()
    if match is None:
        assert err == ""
    else:
        assert err.startswith("diswot: error:") and match in err and "\n" not in err


def test_other_runtime_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["rank", "--space", "s1"])
