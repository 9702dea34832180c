"""Asynchronous aging evolution (``run_search(workers=..., in_flight=...)``).

The contract: results are taken in proposal order, so a search is a deterministic function of
``(seed, in_flight)``: worker processes, Ray actors and the in-process loop give the same
candidates, ``in_flight=1`` is the serial search whatever runs it, a killed run resumes exactly
(with any number of workers), and every candidate respects the budget and is scored once.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.search.api import run_search
from diswot.search.ledger import CANDIDATES

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

#: DisWOT on S1 against a small teacher: a real objective, cheap enough for processes.
REAL = dict(teacher="resnet8", batch_size=8, algorithm="evolution", population=4, sample_size=2)


def hashed(arch: str) -> float:
    """A cheap, deterministic objective (module level, so worker processes can import it)."""
    return (zlib.crc32(arch.encode()) % 10007) / 10007.0


def _archs(res) -> list[tuple[str, float]]:
    return [(c["arch"], c["score"]) for c in res.candidates]


@pytest.fixture(scope="module")
def inline2() -> list[tuple[str, float]]:
    """The reference for two in flight: the in-process loop (no worker)."""
    return _archs(run_search("s1", cycles=10, in_flight=2, **REAL))


def test_processes_equal_the_inline_loop_and_one_in_flight_is_serial(inline2: list) -> None:
    serial = run_search("s1", cycles=10, **REAL)
    procs = run_search("s1", cycles=10, workers=2, **REAL)
    assert _archs(procs) == inline2  # same archs, same scores, same order
    assert procs.settings["in_flight"] == 2 and procs.settings["workers"] == 2
    # Two processes with one candidate in flight: exactly the serial search.
    one = run_search("s1", cycles=10, workers=2, in_flight=1, **REAL)
    assert _archs(one) == _archs(serial)
    assert one.winner == serial.winner


def test_in_flight_search_respects_budget_cycles_and_scores_each_arch_once() -> None:
    kw = dict(objective=hashed, population=10, sample_size=3, seed=2, max_flops="60M")
    serial = run_search("nb201", cycles=150, **kw)
    many = run_search("nb201", cycles=150, in_flight=6, **kw)
    assert len(many.candidates) == 150
    archs = [c["arch"] for c in many.candidates]
    assert len(set(archs)) == 150  # duplicates are looked up, never rescored
    assert all(c["flops"] <= 60_000_000 for c in many.candidates)
    assert [c["step"] for c in many.candidates] == list(range(1, 151))
    assert archs != [c["arch"] for c in serial.candidates]  # it is another (async) search
    # Still an optimiser: better than the first population of random samples.
    assert many.winner["score"] > max(c["score"] for c in many.candidates[:10])


def test_killed_in_flight_run_resumes_exactly_with_any_workers(tmp_path: Path) -> None:
    kw = dict(objective=hashed, population=8, sample_size=3, seed=5, cycles=60)
    whole = run_search("nb201", in_flight=4, out_dir=tmp_path / "whole", **kw)
    part = tmp_path / "part"
    run_search("nb201", in_flight=4, out_dir=part, **kw)
    lines = (part / CANDIDATES).read_text().splitlines()
    (part / CANDIDATES).write_text("\n".join(lines[:23]) + "\n" + lines[23][:17])  # torn line
    # Resumed on 2 processes without naming --in-flight: the recorded 4 is kept.
    resumed = run_search("nb201", workers=2, out_dir=part, resume=True, **kw)
    assert _archs(resumed) == _archs(whole)
    assert (part / CANDIDATES).read_text().count("\n") == 60
    with pytest.raises(DiswotError, match="resume with --in-flight 4") as info:
        run_search("nb201", in_flight=3, out_dir=part, resume=True, **kw)
    assert "\n" not in str(info.value)


def test_unpicklable_objective_and_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(DiswotError, match="cannot be sent to worker processes"):
        run_search("nb201", objective=lambda a: 0.0, cycles=4, workers=2)
    with pytest.raises(DiswotError, match="--workers must be an integer >= 1"):
        run_search("nb201", objective=hashed, cycles=4, workers=0)
    with pytest.raises(DiswotError, match="--in-flight must be an integer >= 1"):
        run_search("nb201", objective=hashed, cycles=4, in_flight=0)
    with pytest.raises(DiswotError, match="unknown backend 'dask'"):
        run_search("nb201", objective=hashed, cycles=4, backend="dask")
    with pytest.raises(DiswotError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        pytest.importorskip("ray")
        run_search("nb201", objective=hashed, cycles=4, backend="ray", address="127.0.0.1:1")


def test_cli_search_with_workers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    rc = main(
        ["search", "--space", "s1", "--teacher", "resnet8", "--batch-size", "8", "--cycles", "6",
         "--algorithm", "evolution", "--population", "3", "--sample-size", "2", "--workers", "2",
         "--out", str(out), "--no-progress", "--json"]
    )  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_scored"] == 6 and res["settings"]["in_flight"] == 2
    inline = run_search("s1", cycles=6, in_flight=2, **{**REAL, "population": 3, "sample_size": 2})
    assert res["winner"]["arch"] == inline.winner["arch"]


def test_ray_search_equals_inline_and_survives_killed_actors(
    inline2: list, ray_runtime, tmp_path: Path
) -> None:
    ray = ray_runtime
    out = tmp_path / "ray"
    box: dict = {}

    def work() -> None:
        try:
            box["res"] = run_search("s1", cycles=10, backend="ray", workers=2, out_dir=out, **REAL)
        except BaseException as exc:  # surfaced by the assertions below
            box["err"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 120
    cache = out / CANDIDATES
    while not (cache.exists() and cache.read_text().count("\n") >= 2):
        assert thread.is_alive() and time.monotonic() < deadline, box
        time.sleep(0.05)
    names = sorted(n for n in ray.util.list_named_actors() if n.startswith("diswot-eval-"))
    assert len(names) == 2
    ray.kill(ray.get_actor(names[0]), no_restart=False)  # restarted, its call retried
    ray.kill(ray.get_actor(names[1]), no_restart=True)  # gone: its candidate goes to the other
    thread.join(timeout=180)
    assert not thread.is_alive() and "err" not in box, box.get("err")
    assert _archs(box["res"]) == inline2


def test_stdin_main_is_refused_before_any_worker_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from diswot.parallel import check_spawnable

    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>", raising=False)
    with pytest.raises(DiswotError, match="<stdin> is not a file; save the script"):
        check_spawnable()
    with pytest.raises(DiswotError, match="save the script to a file"):
        run_search("nb201", objective=hashed, cycles=4, workers=2)


def test_scoring_is_strict_fp32_and_restores_the_callers_tf32_flags() -> None:
    from diswot.scoring import strict_fp32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with strict_fp32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_local_workers_on_one_gpu_get_a_note(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diswot.parallel import warn_shared_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    warn_shared_gpu("cpu", 4)
    warn_shared_gpu("cuda", 1)
    assert capsys.readouterr().err == ""
    warn_shared_gpu("cuda", 4)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4 worker processes share 1 GPU(s)" in err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    warn_shared_gpu("cuda", 4)  # one worker per GPU: nothing to say
    assert capsys.readouterr().err == ""
    warn_shared_gpu("cuda:0", 2)  # an explicit device: every worker uses that one
    assert "share 1 GPU(s)" in capsys.readouterr().err


def test_workers_take_one_gpu_each_on_a_multi_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from diswot.parallel import _gpu_counter, assign_gpu

    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    ctx = multiprocessing.get_context("spawn")
    assert _gpu_counter(ctx, "cpu") is None and _gpu_counter(ctx, "cuda:1") is None
    counter = _gpu_counter(ctx, "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [assign_gpu(counter) for _ in range(5)] == [0, 1, 2, 0, 1]
    assert chosen == [0, 1, 2, 0, 1]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert assign_gpu(counter) is None and len(chosen) == 5  # one GPU: left as it is
    assert assign_gpu(None) is None


def threads_seen(arch: str) -> float:
    """An objective reporting the intra-op threads of the process that scores (module level)."""
    return float(torch.get_num_threads())


def test_workers_keep_one_thread_whatever_the_parents_threads() -> None:
    from diswot.runtime import torch_threads

    with torch_threads(2):  # what `diswot search --threads 2 --workers 2` does in the parent
        procs = run_search("s1", objective=threads_seen, cycles=4, workers=2)
        inline = run_search("s1", objective=threads_seen, cycles=4)
    assert {c["score"] for c in procs.candidates} == {1.0}  # workers pin one thread each
    assert {c["score"] for c in inline.candidates} == {2.0}  # in-process: the parent's --threads
