"""The automatic thread count: given wins, busy CPUs are left alone, workers split the rest."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from diswot import runtime
from diswot.errors import DiswotError
from diswot.runtime import ThreadChoice, busy_cpus, choose_threads, torch_threads


def test_given_threads_win(monkeypatch):
    monkeypatch.setattr(runtime, "busy_cpus", lambda window=0.1: 5.0)
    c = choose_threads(3)
    assert (c.threads, c.given) == (3, True)
    assert c.text() == "threads 3 (--threads)"


@pytest.mark.parametrize("bad", [0, -1, True])
def test_bad_thread_counts_are_one_line_errors(bad):
    with pytest.raises(DiswotError, match="--threads must be at least 1"):
        choose_threads(bad)


def test_busy_cpus_are_left_to_their_owner(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(runtime, "busy_cpus", lambda window=0.1: 0.2)
    assert choose_threads().threads == 4
    monkeypatch.setattr(runtime, "busy_cpus", lambda window=0.1: 1.6)
    c = choose_threads()
    assert c.threads == 2 and not c.given and "1.6 busy" in c.text()
    monkeypatch.setattr(runtime, "busy_cpus", lambda window=0.1: 3.9)
    assert choose_threads().threads == 1  # never zero
    monkeypatch.setattr(runtime, "busy_cpus", lambda window=0.1: 0.0)
    assert choose_threads(workers=2).threads == 2  # free CPUs split over worker processes
    assert choose_threads(workers=8).threads == 1


def test_a_real_busy_neighbour_is_seen():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        assert busy_cpus(window=0.3) >= 0.5
    finally:
        spin.kill()
        spin.wait()


def test_torch_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with torch_threads(ThreadChoice(1, 2, 1.0, False)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_cli_says_what_it_chose_next_to_a_busy_neighbour(tmp_path):
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        out = subprocess.run(
            [sys.executable, "-m", "diswot", "search", "--cycles", "30", "--out", str(tmp_path / "s"),
             "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        spin.kill()
        spin.wait()
    assert out.returncode == 0, out.stderr
    assert "(auto:" in out.stderr and "--threads N overrides" in out.stderr
    assert out.stdout.startswith("{")  # stdout stays one JSON object


def test_an_error_next_to_a_busy_neighbour_is_still_one_error_line():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        out = subprocess.run(
            [sys.executable, "-m", "diswot", "score", "--student", "9x9"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        spin.kill()
        spin.wait()
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert lines[-1].startswith("diswot: error: unknown model '9x9'")
    # on a loaded machine the start-up itself may pass the note's delay: then the note is the
    # only other line
    assert all("(auto:" in line for line in lines[:-1]) and len(lines) <= 2
