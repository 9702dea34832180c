"""Bad inputs and hard endings on the command line: one line that names the fix (exit 2), or a
warning beside a result that stands (exit 0), and nothing written is lost.

:data:`CASES` is the table: a command run through :func:`diswot.cli.main` (the console script's
entry), the line it must print on stderr (a regex matched against the whole line) and its exit
status. An error must be the *only* line on stderr (nothing may claim to write a folder it then
fails to make). The tests below it use real processes: a real SIGTERM to a running search that is
then resumed, real script files that start worker processes without a ``__main__`` guard, a real
peak-memory measurement against the probe-memory estimate, and the quick search default replayed
from the command line it prints.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from diswot.cli import main
from diswot.config import ProbeConfig
from diswot.distill.checkpoint import load_checkpoint
from diswot.scoring import Scorer
from diswot.scoring.memory import estimate_probe_memory
from diswot.search.ledger import CANDIDATES

#: Options that keep every table command's stderr free of the automatic-threads note.
QUIET = ["--threads", "1"]
RANK = "rank --space s1 --teacher resnet8 --batch-size 4 --no-progress"
#: A batch whose N x N relation matrices alone need ~29,000 GiB: refused on any machine.
HUGE = "1000000"

#: (what, command, the stderr line it must print, exit status). ``{tmp}`` is the test's folder,
#: holding ``latin1.txt`` (a Latin-1 archs file), ``two.txt`` (two S1 codes) and ``afile``.
CASES: list[tuple[str, str, str, int]] = [
    (
        "archs file not UTF-8",
        f"{RANK} --archs {{tmp}}/latin1.txt --out {{tmp}}/r",
        r"diswot: error: --archs file \S+latin1\.txt is not UTF-8 text \(line 2, byte 0xe9\); "
        r"give a plain-text file with one architecture per line",
        2,
    ),
    (
        "archs path is a folder",
        f"{RANK} --archs {{tmp}} --out {{tmp}}/r",
        r"diswot: error: --archs \S+ is a folder; give a text file with one architecture per line",
        2,
    ),
    (
        "score batch too large for memory",
        f"score --student resnet20 --batch-size {HUGE}",
        r"diswot: error: batch 1,000,000 needs ~[\d.]+ GiB \(activations of teacher resnet110 and "
        r"student resnet20 at 32 px ~[\d.]+ GiB, 1,000,000 x 1,000,000 relation matrices "
        r"~[\d.]+ GiB\), [\d.]+ GiB available on cpu; lower --batch-size \(about [\d,]+ fits\)",
        2,
    ),
    (
        "search batch too large for memory",
        f"search --space s1 --cycles 2 --batch-size {HUGE} --no-progress --out {{tmp}}/s",
        r"diswot: error: batch 1,000,000 needs ~[\d.]+ GiB \(activations of teacher resnet110 .*"
        r"GiB available on cpu; lower --batch-size \(about [\d,]+ fits\)",
        2,
    ),
    (
        "rank batch too large for memory",
        f"rank --space s1 --batch-size {HUGE} --sample 12 --no-progress --out {{tmp}}/r",
        r"diswot: error: batch 1,000,000 needs ~[\d.]+ GiB \(activations of teacher \S+ at 32 px "
        r".* available on cpu; lower --batch-size \(about [\d,]+ fits\)",
        2,
    ),
    (
        "search --out that cannot be made",
        "search --space s1 --cycles 2 --batch-size 4 --no-progress --out {tmp}/afile/run",
        r"diswot: error: cannot create the run folder \S+afile/run \(Not a directory\); "
        r"pass --out a writable folder",
        2,
    ),
    (
        "rank --out that cannot be made",
        f"{RANK} --sample 3 --out {{tmp}}/afile/run",
        r"diswot: error: cannot create the run folder \S+afile/run \(Not a directory\); "
        r"pass --out a writable folder",
        2,
    ),
    (
        "score at a resolution that collapses the feature maps",
        "score --student resnet20 --teacher resnet8 --image-size 4 --batch-size 4",
        r"diswot: warning: --image-size 4 collapses the pre-pool feature map of teacher resnet8 "
        r"to 1x1 \(it downsamples 4x\) and of student resnet20 to 1x1 \(it downsamples 4x\): the "
        r"relation term M_r then compares one position per image; use --image-size 8 or more "
        r"for a 2x2 map",
        0,
    ),
    (
        "rank of two architectures",
        f"{RANK} --archs {{tmp}}/two.txt --out {{tmp}}/r2",
        r"diswot: warning: only 2 architectures ranked: their correlations are mostly chance "
        r"\(a random order has Kendall tau 1 with probability 1/2\); rank at least 10 "
        r"\(--sample or --archs\)",
        0,
    ),
    (
        "rank sample larger than the space",
        "rank --space s1 --teacher none --proxy params --sample 1000 --no-progress "
        "--out {tmp}/r1000",
        r"diswot: note: space 's1' has 64 architectures with ground truth; --sample 1000 ranked "
        r"all 64",
        0,
    ),
]


@pytest.mark.parametrize(
    ("command", "line", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_naming_the_fix(
    command: str, line: str, code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "latin1.txt").write_bytes("111\n# caf\xe9\n113\n".encode("latin-1"))
    (tmp_path / "two.txt").write_text("111\n333\n")
    (tmp_path / "afile").write_text("not a folder")
    assert main(shlex.split(command.format(tmp=tmp_path)) + QUIET) == code
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:
        assert any(re.fullmatch(line, e) for e in err), err
    else:  # the error alone: nothing before it claims to have written anything
        assert len(err) == 1 and re.fullmatch(line, err[0]), err
    assert (tmp_path / "afile").read_text() == "not a folder"


def _python(*args: str, cwd: Path | None = None, **kw: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _sigterm_once(argv: list[str], journal: Path, lines: int) -> tuple[int, str]:
    """Run ``diswot *argv`` and send it a real SIGTERM once ``journal`` holds ``lines`` lines (the
    command is then mid-run, its handler installed). Returns the exit status and stderr."""
    proc = _python("-m", "diswot", *argv)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.is_file() and journal.read_bytes().count(b"\n") >= lines:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.002)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _candidates(out: Path) -> list[tuple[str, float]]:
    rows = [json.loads(x) for x in (out / CANDIDATES).read_text().splitlines()]
    return [(r["arch"], r["score"]) for r in rows]


def test_sigterm_mid_search_keeps_results_and_the_resume_finds_the_same_winner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    argv = ["search", "--space", "nb201", "--cycles", "150", "--population", "10",
            "--sample-size", "3", "--batch-size", "8", "--no-progress", *QUIET]  # fmt: skip
    code, err = _sigterm_once([*argv, "--out", str(cut)], cut / CANDIDATES, 5)
    assert code == 143, err
    assert err.strip().splitlines()[-1] == (
        "diswot: terminated (SIGTERM); results written so far are kept; continue with: "
        f"diswot search --resume {cut}"
    ), err
    kept = _candidates(cut)
    assert 5 <= len(kept) < 150  # ended mid-run, and what it scored is there

    assert main(["search", "--resume", str(cut), "--no-progress", *QUIET]) == 0
    assert main([*argv, "--out", str(whole)]) == 0
    capsys.readouterr()
    assert _candidates(cut) == _candidates(whole)
    assert _candidates(cut)[: len(kept)] == kept
    winner = json.loads((cut / "result.json").read_text())["winner"]
    assert winner == json.loads((whole / "result.json").read_text())["winner"]


_UNGUARDED = """\
from diswot.search.api import run_search

result = run_search("s1", teacher="resnet8", cycles=4, batch_size=4, workers=2,
                    out_dir="run", progress=False)
print(result.winner)
"""

#: A guard that lets spawned workers in (they import the script as ``__mp_main__``).
_LEAKY_GUARD = """\
from diswot.rank.api import run_rank

if __name__ == "__main__" or __name__ == "__mp_main__":
    run_rank("s1", teacher="resnet8", sample=4, batch_size=4, workers=2, out_dir="run",
             progress=False)
"""


def _run_script(script: Path, text: str) -> str:
    """Write ``text`` to ``script``, run it in its folder, check it failed; its stderr."""
    script.write_text(text)
    proc = _python(str(script), cwd=script.parent)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    return err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (_UNGUARDED, 3),
        # A test of __name__ that is not the guard: spawned workers would pass it.
        (_UNGUARDED.replace("result =", 'if __name__ != "x":\n    result ='), 4),
    ],
    ids=["no guard", "another test of __name__"],
)
def test_workers_from_a_script_without_a_main_guard_say_so(
    text: str, line: int, tmp_path: Path
) -> None:
    script = tmp_path / "unguarded.py"
    err = _run_script(script, text)
    assert err.strip().splitlines()[-1] == (
        f"diswot.errors.DiswotError: {script} starts worker processes from its top-level code "
        f'(line {line}) without an `if __name__ == "__main__":` guard: every worker re-imports '
        "the script and would run that code again; put the script's top-level code under "
        '`if __name__ == "__main__":`, or use workers=1'
    ), err
    assert not (tmp_path / "run").exists()  # refused before the run folder and any worker
    assert "a worker process died" not in err


def test_python_m_diswot_starts_workers(tmp_path: Path) -> None:
    # A package's __main__ runs unguarded top-level code, but spawn never re-imports one.
    proc = _python("-m", "diswot", "search", "--space", "s1", "--teacher", "resnet8",
                   "--workers", "2", "--cycles", "4", "--batch-size", "4", "--no-progress",
                   "--out", str(tmp_path / "run"), *QUIET)  # fmt: skip
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert len(_candidates(tmp_path / "run")) == 4


def test_a_worker_reimporting_the_script_stops_with_one_line(tmp_path: Path) -> None:
    script = tmp_path / "leaky.py"
    err = _run_script(script, _LEAKY_GUARD)
    said = (
        f"diswot: error: run_rank was called in a worker process while it re-imported {script}: "
        'the script\'s top-level code is not under an `if __name__ == "__main__":` guard, so '
        'every worker runs it again; put it under `if __name__ == "__main__":`'
    )
    # Each worker says it (two may write at once, so not necessarily on lines of their own),
    # without a traceback; then the parent reports its dead workers.
    assert said in err and "Traceback" not in err.split(said)[0], err
    assert err.strip().splitlines()[-1].endswith("rerun the same command to resume"), err


_PEAK = (
    "import resource, sys; from diswot.cli import main; code = main(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_the_probe_memory_estimate_follows_the_measured_peak() -> None:
    """Peak resident memory of ``diswot score`` at batches 8 and 384, measured by the process
    itself: the growth is the estimate's growth within a quarter."""

    def peak(batch: int) -> int:
        proc = _python("-c", _PEAK, "score", "--student", "resnet20", "--teacher", "resnet20",
                       "--batch-size", str(batch), "--proxy", "diswot", *QUIET)  # fmt: skip
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        return int(out.strip().splitlines()[-1]) * 1024

    small, large = peak(8), peak(384)
    estimate = estimate_probe_memory(Scorer("resnet20", ProbeConfig()), "resnet20", ["diswot"])
    assert estimate is not None
    grew, expected = large - small, estimate.at(384) - estimate.at(8)
    assert 0.75 * expected <= grew <= 1.25 * expected, (grew, expected)


def test_the_quick_default_is_the_command_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--no-progress", *QUIET]) == 0
    err = capsys.readouterr().err
    said = re.search(r"running the quick default, the same search as: (diswot search .*)", err)
    assert said is not None, err
    command = shlex.split(said.group(1))
    assert command[:4] == ["diswot", "search", "--space", "nb201"]
    assert "--max-flops" in command and "--cycles" in command and "--batch-size" in command
    (bare,) = (tmp_path / "runs").iterdir()
    assert main([*command[1:], "--out", "printed", "--no-progress", *QUIET]) == 0
    printed = tmp_path / "printed"
    assert _candidates(bare) == _candidates(printed)
    settings = [json.loads((d / "settings.json").read_text())["settings"] for d in (bare, printed)]
    assert settings[0] == settings[1]


SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train", "64", "--synthetic-test", "32",
             "--synthetic-classes", "10", "--batch-size", "32", "--quiet", *QUIET]  # fmt: skip


def test_distill_reports_teacher_accuracy_gain_and_resume_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher, alone, run = tmp_path / "teacher", tmp_path / "alone", tmp_path / "run"
    for model, epochs, out in (("resnet14", "2", teacher), ("resnet8", "1", alone)):
        assert (
            main(["train", "--model", model, *SYNTHETIC, "--epochs", epochs, "--out", str(out)])
            == 0
        )
    t_top1 = load_checkpoint(teacher / "best.pt")["best"]["top1"]
    a_top1 = load_checkpoint(alone / "best.pt")["best"]["top1"]
    capsys.readouterr()

    argv = ["distill", "--teacher-ckpt", str(teacher / "best.pt"), "--student", "resnet8",
            *SYNTHETIC, "--epochs", "3", "--out", str(run)]  # fmt: skip
    # Another student's run is not a baseline: refused before any training.
    wrong = [*argv[:4], "resnet20", *argv[5:], "--baseline-ckpt", str(alone / "best.pt")]
    assert main(wrong) == 2
    assert capsys.readouterr().err.strip() == (
        f"diswot: error: --baseline-ckpt {alone / 'best.pt'} is a resnet8 trained on synthetic, "
        "but the student is a resnet20 on synthetic; pass the student's own diswot train run"
    )
    assert not run.exists()

    # SIGTERM once the first epoch is logged: kept, and the resume says where it continues.
    code, err = _sigterm_once(argv, run / "log.jsonl", 1)
    if code == 0:
        pytest.skip("the three epochs ended before the signal was handled")
    assert code == 143, err
    assert err.strip().splitlines()[-1] == (
        "diswot: terminated (SIGTERM); results written so far are kept; continue with the same "
        "command plus --resume"
    )
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert main([*argv, "--resume", "--baseline-ckpt", str(alone / "best.pt")]) == 0
    out, err = capsys.readouterr()
    assert f"diswot: resuming from epoch {done + 1} ({done} of 3 done)" in err.splitlines()
    result = json.loads((run / "result.json").read_text())
    lines = out.strip().splitlines()
    assert lines[-2] == (
        f"teacher resnet14: best top-1 {t_top1:.2f}% (epoch "
        f"{load_checkpoint(teacher / 'best.pt')['best']['epoch']}) on synthetic, as recorded in "
        "its checkpoint"
    )
    assert lines[-1] == (
        f"gain over the student trained alone: {result['best_top1'] - a_top1:+.2f} points of best "
        f"top-1 ({a_top1:.2f}% from {alone / 'best.pt'}, 1 epoch)"
    )


def test_distill_of_an_s1_student_on_cifar100_compares_with_the_shipped_vanilla_accuracy(
    fake_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--dataset", "cifar100", "--data-root", str(fake_cifar), "--batch-size", "50",
            "--epochs", "1", "--quiet", *QUIET]  # fmt: skip
    assert main(["train", "--model", "resnet8", *data, "--out", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    argv = ["distill", "--teacher-ckpt", str(tmp_path / "t" / "best.pt"), "--student", "333",
            *data, "--out", str(tmp_path / "d"), "--json"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    from diswot.bench import s1_accuracy

    assert res["baseline_top1"] == s1_accuracy("cls")["333"]
    assert res["gain_top1"] == pytest.approx(res["best_top1"] - res["baseline_top1"])
    assert res["teacher_top1"] == load_checkpoint(tmp_path / "t" / "best.pt")["best"]["top1"]


def test_a_custom_space_spec_gives_one_run_folder_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"{Path(__file__).resolve().parents[1] / 'examples' / 'my_space.py'}:MySpace"
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--space", spec, "--cycles", "2", "--batch-size", "4", "--no-progress"]
    assert main([*argv, *QUIET]) == 0
    (folder,) = (tmp_path / "runs").iterdir()  # one folder, not a tree of the spec's path
    assert re.fullmatch(r"search-my_space\.py-MySpace-\d{8}-\d{6}", folder.name), folder.name
    assert f"writing runs/{folder.name}/" in capsys.readouterr().err


class _Hungry(nn.Module):
    """A student whose forward pass runs out of GPU memory (raised as torch raises it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


def test_running_out_of_memory_in_a_proxy_is_an_error_not_a_nan() -> None:
    # A proxy's numerical failure scores NaN (ranked last); memory running out is not one: it
    # reaches the command, which says to lower --batch-size, instead of a silently NaN student.
    scorer = Scorer("resnet8", ProbeConfig(batch_size=4, num_classes=10))
    with pytest.raises(torch.OutOfMemoryError):
        scorer.score(_Hungry(), ["diswot"])
