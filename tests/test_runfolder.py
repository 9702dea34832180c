"""The shared run-folder pieces: torn tails are cut, corruption refused, writes atomic."""

from __future__ import annotations

import json

import pytest

from diswot.errors import DiswotError
from diswot.runfolder import (
    Journal,
    atomic_write_json,
    read_settings,
    settings_diff,
    write_settings,
)


def test_journal_cuts_torn_tail_so_a_second_resume_reads_clean(tmp_path):
    path = tmp_path / "log.jsonl"
    with Journal(path) as j:
        for i in range(3):
            j.append({"i": i})
    with path.open("ab") as fh:
        fh.write(b'{"i": 3, "half')  # killed mid-write
    j = Journal(path)
    assert j.read() == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert path.read_bytes().endswith(b'{"i": 2}\n')  # fragment cut from the file
    j.append({"i": 3})
    j.close()
    assert Journal(path).read() == [{"i": k} for k in range(4)]


def test_journal_refuses_corruption_in_the_middle(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(DiswotError, match="line 2 is corrupt"):
        Journal(path).read()


def test_journal_check_rejects_out_of_order_records(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 3}\n{"step": 3}\n')
    j = Journal(path, check=lambda rec, n: rec["step"] == n + 1)
    with pytest.raises(DiswotError, match="line 2"):
        j.read()


def test_journal_missing_or_empty_file_reads_nothing(tmp_path):
    assert Journal(tmp_path / "none.jsonl").read() == []
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert Journal(tmp_path / "empty.jsonl").read() == []


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_settings_round_trip_and_diff(tmp_path):
    write_settings(tmp_path, {"seed": 0, "batch_size": 64})
    old = read_settings(tmp_path)
    assert old == {"seed": 0, "batch_size": 64}
    assert settings_diff(old, {"seed": 1, "batch_size": 64}, ["seed", "batch_size"]) == ["seed"]
    # a setting added later reads as its historical value
    assert settings_diff(old, {"precision": "fp32"}, ["precision"]) == []
    assert settings_diff(old, {"precision": "bf16"}, ["precision"]) == ["precision"]


def test_read_settings_errors_are_one_line(tmp_path):
    with pytest.raises(DiswotError, match="settings.json missing"):
        read_settings(tmp_path, "search run")
    (tmp_path / "settings.json").write_text("{broken")
    with pytest.raises(DiswotError, match="corrupt"):
        read_settings(tmp_path)


def test_journal_ends_a_whole_last_record_that_lost_its_newline(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}')  # torn exactly before the newline
    j = Journal(path)
    assert j.read() == [{"i": 0}, {"i": 1}]
    j.append({"i": 2})
    j.close()
    assert Journal(path).read() == [{"i": 0}, {"i": 1}, {"i": 2}]
