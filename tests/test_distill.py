"""End-to-end tests of the distillation stage on the synthetic task (tiny nets, one CPU thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAKE_CIFAR10_PER_BATCH, FAKE_CIFAR10_TEST, FAKE_CIFAR100_TRAIN, fake_images

from diswot.cli import main as cli_main
from diswot.distill import (
    DISTILLERS,
    DataConfig,
    distill,
    evaluate_checkpoint,
    load_checkpoint,
    load_dataset,
    train_model,
)
from diswot.errors import DiswotError

# 256 training images, 8 steps of 32: runs small enough for one CPU thread.
TINY = {
    "synthetic_train": 256,
    "synthetic_test": 256,
    "synthetic_classes": 10,
    "batch_size": 32,
    "progress": False,
    "device": "cpu",
    "threads": 1,
}
CLI_TINY = [
    "--dataset", "synthetic", "--synthetic-train", "256", "--synthetic-test", "256",
    "--batch-size", "32", "--device", "cpu", "--quiet", "--threads", "1",
]  # fmt: skip
METHODS = ["kd", "diswot", "diswot+", "fitnet", "at", "sp", "ickd", "dkd"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> dict:
    """A resnet14 trained on the synthetic task (well above chance), shared by the module."""
    out = tmp_path_factory.mktemp("teacher")
    return train_model("resnet14", "synthetic", out=out, epochs=4, **TINY)


def test_teacher_learns_the_synthetic_task(teacher):
    assert teacher["kind"] == "train" and teacher["arch"] == "resnet14"
    assert teacher["last_top1"] > 50.0  # chance is 10%
    assert teacher["flops"] > teacher["params"] > 100_000  # resnet14: ~175k params
    hist = teacher["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # Milestones 150/180/210 of 240 scale to the 4-epoch run: lr decays at epochs 2, 3 (and 4 is end).
    assert hist[0]["lr"] == pytest.approx(0.05) and hist[-1]["lr"] < 0.05
    assert Path(teacher["checkpoint"]).is_file() and Path(teacher["best_checkpoint"]).is_file()


def test_registry_has_every_method():
    assert set(METHODS) <= set(DISTILLERS.names())


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_two_epochs_and_loss_falls(method, teacher, tmp_path):
    res = distill(
        None, teacher["checkpoint"], "resnet8", method, "synthetic", out=tmp_path, epochs=2,
        **TINY,
    )  # fmt: skip
    h = res["history"]
    assert len(h) == 2
    assert np.isfinite(h[0]["train_loss"]) and h[1]["train_loss"] < h[0]["train_loss"]
    assert res["teacher"] == "resnet14" and res["method"] == method
    # The logged parts are the method's terms.
    parts = {k[5:] for k in h[0] if k.startswith("loss_")}
    assert "ce" in parts and len(parts) >= 2
    ck = load_checkpoint(res["checkpoint"])
    assert ck["method"] == method and ck["arch"] == "resnet8" and ck["epoch"] == 2
    if method == "fitnet":  # learned projection travels with the checkpoint
        assert any(k.startswith("regressor.") for k in ck["distiller"])
    if method == "ickd":
        assert "embed.weight" in ck["distiller"]


def test_distilled_student_beats_chance(teacher, tmp_path):
    res = distill(
        "resnet14", teacher["checkpoint"], "resnet8", "kd", "synthetic", out=tmp_path, epochs=3,
        **TINY,
    )  # fmt: skip
    assert res["best_top1"] >= 35.0  # 10 classes: chance is 10%
    ev = evaluate_checkpoint(res["checkpoint"], device="cpu")
    assert ev["top1"] == pytest.approx(res["last_top1"])
    assert ev["num_images"] == 256 and ev["arch"] == "resnet8"
    best = evaluate_checkpoint(res["best_checkpoint"], device="cpu")
    assert best["top1"] == pytest.approx(res["best_top1"]) and best["method"] == "kd"
    with pytest.raises(DiswotError, match="resume from last.pt"):
        distill(
            "resnet14", teacher["checkpoint"], "resnet8", "kd", "synthetic", out=tmp_path,
            epochs=3, resume=res["best_checkpoint"], **TINY,
        )  # fmt: skip


_CLI = "import sys; from diswot.cli import main; sys.exit(main())"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args], capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
    )  # fmt: skip


def _kill_after_first_epoch(args: list[str], run: Path) -> int:
    """Start ``diswot *args`` and SIGKILL it from outside as soon as its first epoch is logged.

    ``log.jsonl`` is rewritten right after each epoch's checkpoint, so its first line means
    ``last.pt`` holds epoch 1; the kill then lands somewhere in epoch 2 (a real, uncatchable kill at
    no chosen point: nothing in the trainer knows about it). Returns the process's exit status.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    log = run / "log.jsonl"
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if log.is_file() and log.read_bytes().count(b"\n") >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()  # past the deadline or the loop failed (after our kill: the same signal)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return proc.returncode


def test_resume_after_sigkill_matches_uninterrupted_run(teacher, tmp_path):
    run = tmp_path / "run"
    common = [
        "distill", "--teacher-ckpt", teacher["checkpoint"], "--student", "resnet8",
        "--method", "fitnet", "--epochs", "3", *CLI_TINY, "--json", "--out", str(run),
    ]  # fmt: skip
    _kill_after_first_epoch(common, run)
    assert 1 <= load_checkpoint(run / "last.pt")["epoch"] < 3  # killed before the end
    resumed = _cli(*common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    res = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert res["resumed_from_epoch"] >= 1 and res["best_top1"] is not None

    full = distill(
        None, teacher["checkpoint"], "resnet8", "fitnet", "synthetic", out=tmp_path / "full",
        epochs=3, **TINY,
    )  # fmt: skip
    a, b = load_checkpoint(full["checkpoint"]), load_checkpoint(res["checkpoint"])
    for key in ("model", "distiller"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 4 and log[0].startswith("epoch,") and log[-1].startswith("3,")
    assert len((run / "log.jsonl").read_text().splitlines()) == 3


def test_resume_refuses_a_different_run(teacher, tmp_path):
    kw = dict(TINY)
    train_model("resnet8", "synthetic", out=tmp_path, epochs=1, **kw)
    with pytest.raises(DiswotError, match="already holds a run"):
        train_model("resnet8", "synthetic", out=tmp_path, epochs=1, **kw)
    with pytest.raises(DiswotError, match="different run") as err:
        train_model("resnet8", "synthetic", out=tmp_path, epochs=1, lr=0.1, resume=True, **kw)
    assert "lr" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DiswotError, match="different run"):
        train_model("resnet14", "synthetic", out=tmp_path, epochs=1, resume=True, **kw)
    # The same settings resume; the run is complete, so nothing more is trained.
    again = train_model("resnet8", "synthetic", out=tmp_path, epochs=1, resume=True, **kw)
    assert again["resumed_from_epoch"] == 1 and len(again["history"]) == 1


def test_teacher_checkpoint_mismatches_are_one_line_errors(teacher, tmp_path):
    kw = dict(TINY, epochs=1)
    with pytest.raises(DiswotError, match="holds a resnet14, not a resnet20"):
        distill("resnet20", teacher["checkpoint"], "resnet8", "kd", "synthetic", out=tmp_path, **kw)
    with pytest.raises(DiswotError, match="predicts 10 classes"):
        distill(
            None, teacher["checkpoint"], "resnet8", "kd", "synthetic", out=tmp_path,
            **{**kw, "synthetic_classes": 5},
        )  # fmt: skip
    # A plain state dict (as other code bases save) loads when it matches, and fails clearly when not.
    raw = tmp_path / "raw.pt"
    torch.save({"state_dict": load_checkpoint(teacher["checkpoint"])["model"]}, raw)
    with pytest.raises(DiswotError) as err:
        distill("resnet20", raw, "resnet8", "kd", "synthetic", out=tmp_path / "x", **kw)
    assert "does not match" in str(err.value) and "\n" not in str(err.value)
    ok = distill("resnet14", raw, "resnet8", "kd", "synthetic", out=tmp_path / "ok", **kw)
    assert ok["teacher"] == "resnet14"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DiswotError, match="cannot read teacher checkpoint"):
        distill("resnet14", garbage, "resnet8", "kd", "synthetic", out=tmp_path / "g", **kw)


def test_cli_bad_inputs_exit_2_with_one_line(teacher, tmp_path, capsys):
    base = ["distill", "--teacher-ckpt", teacher["checkpoint"], *CLI_TINY, "--epochs", "1"]
    cases = [
        (["--student", "resnet8", "--method", "nope", "--out", str(tmp_path / "a")], "unknown"),
        (["--student", "not_a_net", "--out", str(tmp_path / "b")], "unknown model"),
        (["--student", str(tmp_path / "missing.json")], "does not exist"),
        (["--student", "resnet8", "--weight", "sp", "--out", str(tmp_path / "c")], "NAME=NUMBER"),
        (
            ["--student", "resnet8", "--weight", "zz=1", "--out", str(tmp_path / "d")],
            "no weight zz",
        ),
    ]
    for extra, needle in cases:
        assert cli_main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("diswot: error:") and needle in err and "\n" not in err, err
    assert cli_main(["evaluate", "--ckpt", str(tmp_path / "none.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_search_result_json_as_student(teacher, tmp_path, capsys):
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"space": "s1", "winner": {"arch": "111", "score": -1.0}}))
    rc = cli_main(
        ["distill", "--teacher-ckpt", teacher["checkpoint"], "--student", str(result),
         "--method", "diswot", *CLI_TINY, "--epochs", "1", "--out", str(tmp_path / "o"), "--json"]
    )  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["arch"] == "111" and res["method"] == "diswot"
    assert {"best_top1", "last_top1", "checkpoint"} <= set(res)
    rc = cli_main(["evaluate", "--ckpt", res["checkpoint"], "--json", "--device", "cpu"])
    ev = json.loads(capsys.readouterr().out)
    assert rc == 0 and ev["top1"] == pytest.approx(res["last_top1"])


def test_fake_cifar_loads_and_trains(fake_cifar, tmp_path, capsys):
    train, test = load_dataset(DataConfig("cifar100", str(fake_cifar)))
    assert (
        train.images.shape == (FAKE_CIFAR100_TRAIN, 3, 32, 32) and train.images.dtype == torch.uint8
    )
    np.testing.assert_array_equal(
        train.images.permute(0, 2, 3, 1).numpy(), fake_images(FAKE_CIFAR100_TRAIN, seed=100)
    )
    assert train.num_classes == 100 and int(train.labels.max()) == 99 and len(test) == 100
    c10, _ = load_dataset(DataConfig("cifar10", str(fake_cifar)))
    assert len(c10) == 5 * FAKE_CIFAR10_PER_BATCH and c10.num_classes == 10
    rc = cli_main(
        ["train", "--model", "resnet8", "--dataset", "cifar10", "--data-root", str(fake_cifar),
         "--epochs", "1", "--batch-size", "50", "--device", "cpu", "--quiet", "--json",
         "--out", str(tmp_path / "c10")]
    )  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["dataset"] == "cifar10" and res["num_classes"] == 10
    # Accuracy over the fake test batch: a whole number of its images, top-5 at least top-1.
    assert res["last_top1"] in {100.0 * c / FAKE_CIFAR10_TEST for c in range(FAKE_CIFAR10_TEST + 1)}
    assert res["last_top5"] >= res["last_top1"]
    with pytest.raises(DiswotError, match="cifar-100-python"):
        load_dataset(DataConfig("cifar100", str(tmp_path / "nowhere")))


def test_bf16_autocast_path_runs_on_cpu(teacher, tmp_path):
    res = distill(
        None, teacher["checkpoint"], "resnet8", "diswot+", "synthetic", out=tmp_path, epochs=1,
        amp="bf16", **{**TINY, "synthetic_train": 64, "synthetic_test": 64},
    )  # fmt: skip
    assert np.isfinite(res["history"][0]["train_loss"])
    assert load_checkpoint(res["checkpoint"])["amp"] == "bf16"
