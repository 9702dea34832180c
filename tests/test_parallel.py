"""Parallel scoring (:mod:`diswot.parallel`): worker processes and Ray actors give the serial path's
scores bit for bit, write the same resumable cache, and lose nothing when a worker dies."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

import diswot.parallel.stream
from diswot.cli import main
from diswot.errors import DiswotError
from diswot.rank import load_scores, run_rank
from diswot.rank.store import score_record

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["111", "135", "333", "513", "731", "777", "155", "715"]
FAST = dict(teacher="resnet8", batch_size=8, progress=False, archs=ARCHS)


@pytest.fixture(scope="module")
def serial() -> dict:
    """The reference: the default in-process path."""
    return run_rank("s1", **FAST).scores


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(r["arch"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())]


def test_workers_resume_serial_cache_with_identical_scores(
    serial: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run folder whose cache already holds 3 architectures (as a killed serial run leaves it):
    # the 2-process run must score only the other 5, append them, and agree bit for bit.
    out = tmp_path / "run"
    out.mkdir()
    cache = out / "scores.jsonl"
    done = ARCHS[:3]
    cache.write_text("".join(json.dumps(score_record(a, 0, serial[a][0], {})) + "\n" for a in done))
    res = run_rank("s1", workers=2, chunk_size=2, out_dir=out, **FAST)
    assert res.scores == serial  # exact float equality, every proxy
    keys = _keys(cache)
    assert keys[:3] == [(a, 0) for a in done]
    assert sorted(keys[3:]) == sorted((a, 0) for a in ARCHS[3:])  # each scored once, none again
    assert load_scores(cache) == serial

    # Rerun: everything cached, nothing scored, no worker started.
    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker pool was started for a fully cached run")

    monkeypatch.setattr(diswot.parallel.stream, "ProcessPool", no_pool)
    again = run_rank("s1", workers=2, out_dir=out, **FAST)
    assert again.scores == serial and len(_keys(cache)) == len(ARCHS)


def test_bad_parallel_settings_are_one_line_errors() -> None:
    with pytest.raises(DiswotError, match="--workers must be at least 1"):
        run_rank("s1", workers=0, **FAST)
    with pytest.raises(DiswotError, match="unknown backend 'dask'"):
        run_rank("s1", backend="dask", **FAST)


def test_ray_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(DiswotError, match=r"pip install 'diswot\[ray\]'") as info:
        run_rank("s1", backend="ray", workers=2, **FAST)
    assert "\n" not in str(info.value)
    # The CLI flags reach run_rank, and the error is one line with exit status 2.
    argv = ["rank", "--backend", "ray", "--address", "auto", "--gpus-per-task", "0.5"]
    argv += [
        "--teacher",
        "resnet8",
        "--batch-size",
        "8",
        "--no-progress",
        "--threads",  # no thread note on stderr on a busy machine, only the error
        "1",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diswot: error: --backend ray needs Ray") and "\n" not in err


# ------------------------------------------------------------------------------------ Ray


def test_ray_unreachable_address_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'diswot[ray]')")
    assert not ray.is_initialized()  # runs before the module's Ray runtime starts

    def no_init(*args: object, **kwargs: object) -> None:
        raise AssertionError("ray.init was called: it retries an unreachable address for minutes")

    # Fast means: refused by the socket check, before ray.init (which would retry and wait).
    monkeypatch.setattr(ray, "init", no_init)
    with pytest.raises(DiswotError, match="cannot reach the Ray cluster at 127.0.0.1:1") as info:
        run_rank("s1", backend="ray", address="127.0.0.1:1", **FAST)
    assert "\n" not in str(info.value) and not ray.is_initialized()


def test_ray_rank_survives_killed_actors(serial: dict, ray_runtime, tmp_path: Path) -> None:
    ray = ray_runtime
    out = tmp_path / "ray"
    cache = out / "scores.jsonl"
    box: dict = {}

    def work() -> None:
        try:
            box["res"] = run_rank("s1", backend="ray", workers=2, chunk_size=1, out_dir=out, **FAST)
        except BaseException as exc:  # surfaced by the assertions below
            box["err"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 120
    while not (cache.exists() and cache.read_text().count("\n") >= 1):
        assert thread.is_alive() and time.monotonic() < deadline, box
        time.sleep(0.05)
    names = sorted(n for n in ray.util.list_named_actors() if n.startswith("diswot-scorer-"))
    assert len(names) == 2
    scored_before = cache.read_text().count("\n")
    # One actor dies and is restarted by Ray (its calls retried); the other dies for good, so
    # its chunks must be re-submitted to the survivor.
    ray.kill(ray.get_actor(names[0]), no_restart=False)
    ray.kill(ray.get_actor(names[1]), no_restart=True)
    thread.join(timeout=180)
    assert not thread.is_alive() and "err" not in box, box.get("err")
    assert scored_before < len(ARCHS)  # the kills happened mid-run
    assert box["res"].scores == serial
    assert sorted(_keys(cache)) == sorted((a, 0) for a in ARCHS)  # nothing lost or doubled
