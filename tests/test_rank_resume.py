"""A rank run folder survives kills: a torn last line of ``scores.jsonl`` is cut on resume (not just
skipped, so the next append starts on a clean line), and a run killed with SIGKILL any number of
times, resumed each time, ends with the table and ``scores.csv`` of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diswot.cli import main
from diswot.rank import load_scores, run_rank

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["111", "135", "333", "513", "731"]
FAST = dict(teacher="resnet8", proxies="diswot,l2_norm", batch_size=8, seeds=2, progress=False)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(r["arch"], r["seed"]) for r in map(json.loads, _lines(path))]


def test_torn_line_is_cut_and_resumes_twice_to_the_uninterrupted_scores(tmp_path: Path) -> None:
    whole = run_rank("s1", archs=ARCHS, out_dir=tmp_path / "whole", **FAST)
    lines = _lines(tmp_path / "whole" / "scores.jsonl")
    assert len(lines) == len(ARCHS) * 2

    # A run killed mid-write: four records, then half of the fifth.
    out = tmp_path / "torn"
    run_rank("s1", archs=ARCHS[:2], out_dir=out, **FAST)  # the folder's settings
    cache = out / "scores.jsonl"
    cache.write_bytes(b"".join(lines[:4]) + lines[4][: len(lines[4]) // 2])

    first = run_rank("s1", archs=ARCHS, out_dir=out, **FAST)
    assert first.scores == whole.scores
    # The fragment is gone, not skipped: every line parses and each evaluation is there once.
    assert sorted(_keys(cache)) == sorted(_keys(tmp_path / "whole" / "scores.jsonl"))
    assert _keys(cache)[:4] == _keys(tmp_path / "whole" / "scores.jsonl")[:4]
    # The second resume used to fail with "scores.jsonl line 5 is corrupt".
    again = run_rank("s1", archs=ARCHS, out_dir=out, **FAST)
    assert again.scores == whole.scores and load_scores(cache) == whole.scores
    assert len(_lines(cache)) == len(lines)
    for name in ("scores.csv", "correlations.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes


def test_a_corrupt_line_before_the_end_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_rank("s1", archs=ARCHS[:3], out_dir=out, **FAST)
    cache = out / "scores.jsonl"
    lines = _lines(cache)
    cache.write_bytes(lines[0] + b'{"arch": "13\n' + b"".join(lines[1:]))
    with pytest.raises(Exception, match=r"scores.jsonl line 2 is corrupt; delete that line"):
        run_rank("s1", archs=ARCHS[:3], out_dir=out, **FAST)


# ------------------------------------------------------------------------------------ SIGKILL

ARGS = ["rank", "--space", "nb201", "--sample", "30", "--proxy", "diswot,params",
        "--batch-size", "16", "--threads", "1", "--no-progress"]  # fmt: skip
N_EVALS = 30  # one seed


def _table_without_timings(text: str) -> list[str]:
    """``table.md`` without the s/arch column and the timing line (wall times differ per run)."""
    out, drop = [], None
    for line in text.splitlines():
        if line.startswith("s/arch:"):
            continue
        if line.startswith("|"):
            cells = line.split(" | ")
            if drop is None and "s/arch" in line:
                drop = next(i for i, c in enumerate(cells) if c.strip(" |") == "s/arch")
            if drop is not None and not line.startswith("|---"):
                cells = cells[:drop] + cells[drop + 1 :]
            line = " | ".join(cells)
        out.append(line)
    return out


def _start(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from diswot.cli import main; sys.exit(main())"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*cmd, *ARGS, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_three_times_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    out = tmp_path / "killed"
    cache = out / "scores.jsonl"
    kills = []
    for _ in range(3):
        # Kill after 1 to 4 more lines, a random moment after the last one appeared.
        target = _count(cache) + rng.randint(1, 4)
        proc = _start(out)
        deadline = time.monotonic() + 240
        while proc.poll() is None and _count(cache) < target:
            assert time.monotonic() < deadline, f"no progress (seed {seed})"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:  # finished early on a fast machine: nothing left to kill
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        kills.append(_count(cache))
    # A kill may land after the last line, while the outputs are written: still a kill to resume
    # from, but at least one must have cut the scoring itself short.
    assert kills and kills[0] < N_EVALS, f"the run was never killed mid-way (seed {seed})"
    assert kills == sorted(kills), f"a resumed run lost lines: {kills} (seed {seed})"

    proc = _start(out)
    _, err = proc.communicate(timeout=280)
    assert proc.returncode == 0, f"{err.decode()} (kills after {kills} lines, seed {seed})"
    assert sorted(_keys(cache)) == sorted(set(_keys(cache))) and len(_keys(cache)) == N_EVALS

    fresh = tmp_path / "fresh"
    assert main([*ARGS, "--out", str(fresh), "--json"]) == 0
    msg = f"kills after {kills} lines, seed {seed}"
    assert (out / "scores.csv").read_bytes() == (fresh / "scores.csv").read_bytes(), msg
    got, want = ((d / "table.md").read_text() for d in (out, fresh))
    assert _table_without_timings(got) == _table_without_timings(want), msg
