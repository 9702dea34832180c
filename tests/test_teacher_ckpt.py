"""A trained teacher: ``--teacher-ckpt`` / ``--teacher-init`` on score, rank and search, and
``Scorer(module, teacher_init=...)``.

The teacher is trained for real (``diswot train`` on the synthetic task, once per module); every
file below is a real file on disk: the checkpoint, a plain state dict, a truncated copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.models import create_model
from diswot.rank import run_rank
from diswot.scoring import Scorer, load_teacher_checkpoint, weights_sha256
from diswot.scoring.teacher import reload_teacher
from diswot.search import run_search

#: Small and fast: a probe batch of 16 and S1 students against a ResNet8 teacher.
FAST = ["--batch-size", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` of a ResNet8 trained for two epochs on the 100-class synthetic task (100
    classes: the S1 targets' count, so rank and search take it as it is)."""
    out = tmp_path_factory.mktemp("teacher") / "t8"
    argv = ["train", "--model", "resnet8", "--dataset", "synthetic", "--synthetic-classes", "100",
            "--synthetic-train", "1000", "--synthetic-test", "200", "--epochs", "2",
            "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["best_top1"] > 1.0  # above the 1% of chance: the weights learned something
    return out / "best.pt"


@pytest.fixture(scope="module")
def plain(trained: Path) -> Path:
    """The same weights as a bare state dict (what other training scripts save)."""
    model, _ = load_teacher_checkpoint(trained, None, 100)
    path = trained.parent / "plain.pt"
    torch.save(model.state_dict(), path)
    return path


def _score(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["score", "--student", "713", *FAST, "--json", "--proxy", "diswot", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], *match: str) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diswot: error:"), lines
    for m in match:
        assert m in lines[0], lines[0]
    return lines[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- (a) the checkpoint changes the score; (b) random restores the paper's numbers ----------------
def test_a_trained_checkpoint_changes_the_score(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _score(capsys, "--teacher-ckpt", str(trained))
    paper = _score(capsys, "--teacher", "resnet8")
    assert kept["teacher"] == paper["teacher"] == "resnet8"  # the checkpoint names its arch
    assert kept["teacher_init"] == "keep" and paper["teacher_init"] == "random"
    assert kept["teacher_ckpt"] == str(trained.resolve())
    assert kept["teacher_sha256"] == _sha256(trained) and paper["teacher_sha256"] is None
    assert abs(kept["score"] - paper["score"]) > 1e-3
    # keep is the default with a checkpoint; the same file gives the same score.
    again = _score(capsys, "--teacher-ckpt", str(trained), "--teacher-init", "keep")
    assert again["score"] == kept["score"] and again["teacher_init"] == "keep"


def test_random_init_restores_the_papers_numbers_exactly(trained: Path) -> None:
    module, _ = load_teacher_checkpoint(trained, None, 100)
    kw = dict(num_classes=100, batch_size=16, seeds=(0, 1))
    by_name = Scorer("resnet8", **kw).score("713").values
    assert Scorer(module, teacher_init="random", **kw).score("713").values == by_name
    kept = Scorer(module, **kw)
    assert kept.teacher_init == "keep" and kept.score("713").values != by_name


def test_a_named_teacher_scores_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    # README's Python API number (one thread, two seeds): a teacher by name is still random.
    out = _score(capsys, "--teacher", "resnet110", "--batch-size", "64", "--seeds", "2")
    assert out["score"] == pytest.approx(-0.026417095382875844, rel=1e-9)
    assert out["teacher_init"] == "random"
    explicit = _score(capsys, "--teacher", "resnet110", "--batch-size", "64", "--seeds", "2",
                      "--teacher-init", "random")  # fmt: skip
    assert explicit["score"] == out["score"]


def test_the_module_given_is_copied_never_modified_or_run(trained: Path) -> None:
    module, _ = load_teacher_checkpoint(trained, None, 100)
    module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    digest = weights_sha256(module)
    for init in ("keep", "random"):
        Scorer(module, num_classes=100, batch_size=16, teacher_init=init).score("713")
    assert not module.training  # a copy ran, in train mode; this one stayed in eval mode
    # A train-mode pass would have moved BatchNorm's running statistics: none did.
    assert weights_sha256(module) == digest
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_a_plain_state_dict_of_the_named_teacher_scores_like_the_checkpoint(
    trained: Path, plain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _score(capsys, "--teacher-ckpt", str(trained))
    from_plain = _score(capsys, "--teacher-ckpt", str(plain), "--teacher", "resnet8")
    assert from_plain["score"] == kept["score"]
    # BatchNorm step counters missing (torchvision's files lack them): loaded all the same.
    sd = {k: v for k, v in torch.load(plain).items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, plain.parent / "no_counters.pt")
    again = _score(capsys, "--teacher-ckpt", str(plain.parent / "no_counters.pt"),
                   "--teacher", "resnet8")  # fmt: skip
    assert again["score"] == kept["score"]


# -- (c) one-line errors ----------------------------------------------------------------------------
def test_checkpoint_errors_are_one_line(
    trained: Path, plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["score", "--student", "713", *FAST]
    _error(capsys, [*base, "--teacher-ckpt", str(tmp_path / "none.pt")], "does not exist")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained.read_bytes()[:2000])  # a copy interrupted mid-way
    _error(capsys, [*base, "--teacher-ckpt", str(cut)], "not a readable PyTorch checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    _error(capsys, [*base, "--teacher-ckpt", str(junk)], "not a readable PyTorch checkpoint")
    _error(
        capsys,
        [*base, "--teacher-ckpt", str(trained), "--num-classes", "10"],
        "holds a resnet8 for 100 classes but 10 are scored",
        "pass --num-classes 100",
    )
    _error(
        capsys,
        [*base, "--teacher-ckpt", str(trained), "--teacher", "resnet20"],
        "holds a resnet8, not a resnet20",
        "pass --teacher resnet8",
    )
    _error(
        capsys,
        [*base, "--teacher-ckpt", str(plain), "--teacher", "resnet8", "--num-classes", "10"],
        "holds a classifier for 100 classes",
        "pass --num-classes 100",
    )
    _error(
        capsys,
        [*base, "--teacher-ckpt", str(plain)],
        "plain state dict, which does not name its architecture",
        "pass --teacher NAME",
    )
    tensors = tmp_path / "tensors.pt"
    torch.save({"note": "no weights here"}, tensors)
    _error(capsys, [*base, "--teacher-ckpt", str(tensors), "--teacher", "resnet8"],
           "holds no model state dict")  # fmt: skip


def test_state_dict_keys_that_do_not_match_say_how_many_and_name_one(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["score", "--student", "713", *FAST]
    # ResNet8's weights into a ResNet20: the deeper stages' blocks are missing.
    err = _error(capsys, [*base, "--teacher-ckpt", str(plain), "--teacher", "resnet20"],
                 "missing keys (e.g. ", "pass --teacher NAME")  # fmt: skip
    assert "unexpected" not in err
    # A ResNet20's weights into a ResNet8: blocks the ResNet8 does not have.
    big = tmp_path / "resnet20.pt"
    torch.save(create_model("resnet20", num_classes=100).state_dict(), big)
    err = _error(capsys, [*base, "--teacher-ckpt", str(big), "--teacher", "resnet8"],
                 "unexpected keys (e.g. ")  # fmt: skip
    assert "missing" not in err
    n = int(err.split(" unexpected keys")[0].rsplit(" ", 1)[-1])
    sizes = [len(create_model(name).state_dict()) for name in ("resnet20", "resnet8")]
    assert n == sizes[0] - sizes[1]


def test_teacher_init_choices_that_make_no_sense_are_refused(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["score", "--student", "713", *FAST]
    _error(capsys, [*base, "--teacher-ckpt", str(trained), "--teacher-init", "random"],
           "--teacher-init random re-initialises the teacher", "drop --teacher-ckpt")  # fmt: skip
    _error(capsys, [*base, "--teacher", "resnet8", "--teacher-init", "keep"],
           "--teacher-init keep needs trained weights", "pass --teacher-ckpt PATH")  # fmt: skip
    rank = ["rank", "--space", "s1", "--sample", "3", "--proxy", "params", *FAST, "--no-progress"]
    _error(capsys, [*rank, "--teacher", "none", "--teacher-ckpt", str(trained),
                    "--out", str(trained.parent / "r-none")], "--teacher none")  # fmt: skip
    with pytest.raises(DiswotError, match="unknown --teacher-init 'trained'"):
        Scorer(create_model("resnet8"), teacher_init="trained")


def test_a_target_of_another_class_count_says_which_flag(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command, extra in (("rank", ["--sample", "3"]), ("search", ["--cycles", "2"])):
        argv = [command, "--space", "nb201", "--target", "cifar10", *FAST, "--no-progress",
                "--teacher-ckpt", str(trained), "--out", str(tmp_path / command), *extra]  # fmt: skip
        _error(capsys, argv, "holds a resnet8 for 100 classes but 10 are scored",
               "--target fixes 10 classes")  # fmt: skip


# -- (d) settings.json records the weights; a resume with others is refused ------------------------
def test_rank_records_the_checkpoint_and_refuses_other_weights(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rank"
    argv = ["rank", "--space", "s1", "--sample", "4", *FAST, "--no-progress", "--json"]
    assert main([*argv, "--teacher-ckpt", str(trained), "--out", str(out)]) == 0
    capsys.readouterr()
    s = json.loads((out / "settings.json").read_text())["settings"]
    assert s["teacher"] == "resnet8" and s["teacher_init"] == "keep"
    assert s["teacher_ckpt"] == str(trained.resolve()) and s["teacher_sha256"] == _sha256(trained)
    # The same weights moved elsewhere: the same run (the path is not compared, the digest is).
    moved = tmp_path / "moved.pt"
    shutil.copy(trained, moved)
    assert main([*argv, "--teacher-ckpt", str(moved), "--out", str(out)]) == 0
    capsys.readouterr()
    # Other weights, or the random teacher, into this folder: refused.
    other = tmp_path / "other.pt"
    torch.save(create_model("resnet8", num_classes=100).state_dict(), other)
    _error(capsys, [*argv, "--teacher-ckpt", str(other), "--teacher", "resnet8", "--out",
                    str(out)], "different teacher_sha256")  # fmt: skip
    _error(capsys, [*argv, "--teacher", "resnet8", "--out", str(out)], "teacher_sha256")


def test_rank_re_reads_the_checkpoint_and_refuses_a_changed_file(trained: Path) -> None:
    with pytest.raises(DiswotError, match="has changed since this run recorded it"):
        reload_teacher(trained, "resnet8", 100, "0" * 64)
    assert isinstance(reload_teacher(trained, "resnet8", 100, _sha256(trained)), torch.nn.Module)


def test_rank_folders_written_before_teacher_init_still_resume(tmp_path: Path) -> None:
    out = tmp_path / "old"
    kw = dict(teacher="resnet8", archs=["111", "333"], batch_size=8, progress=False, out_dir=out)
    first = run_rank("s1", **kw)
    path = out / "settings.json"
    stored = json.loads(path.read_text())
    for key in ("teacher_ckpt", "teacher_sha256", "teacher_init"):
        del stored["settings"][key]  # as a folder of the previous release holds it
    path.write_text(json.dumps(stored))
    assert run_rank("s1", **kw).scores == first.scores


def test_search_records_the_checkpoint_resumes_with_it_and_refuses_another(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "search"
    argv = ["search", "--space", "s1", *FAST, "--no-progress", "--json"]
    assert main([*argv, "--teacher-ckpt", str(trained), "--cycles", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    s = json.loads((out / "settings.json").read_text())["settings"]
    assert s["teacher"] == "resnet8" and s["teacher_init"] == "keep"
    assert s["teacher_ckpt"] == str(trained.resolve()) and s["teacher_sha256"] == _sha256(trained)
    # --resume DIR alone reads the recorded checkpoint again.
    assert main([*argv, "--resume", str(out), "--cycles", "3"]) == 0
    winner = json.loads(capsys.readouterr().out)["winner"]
    other = tmp_path / "other.pt"
    torch.save(create_model("resnet8", num_classes=100).state_dict(), other)
    _error(capsys, [*argv, "--resume", str(out), "--cycles", "4", "--teacher-ckpt", str(other),
                    "--teacher", "resnet8"], "other settings: teacher_sha256=")  # fmt: skip
    # score of the result.json scores against the same trained teacher: the search's number.
    assert main(["score", "--student", str(out / "result.json"), "--threads", "1", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["teacher_sha256"] == _sha256(trained)
    assert scored["student"] == winner["arch"]
    assert scored["score"] == pytest.approx(winner["score"], rel=1e-12)


def test_run_search_records_a_kept_module_by_its_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = create_model("resnet8"), create_model("resnet8")  # one architecture, other weights
    kw = dict(cycles=2, batch_size=4, out_dir=tmp_path / "m", progress=False)
    res = run_search("s1", teacher=a, **kw)
    assert res.settings["teacher_init"] == "keep"
    assert res.settings["teacher_sha256"] == weights_sha256(a)
    run_search("s1", teacher=a, resume=True, **{**kw, "cycles": 3})
    with pytest.raises(DiswotError, match="other settings: teacher_sha256="):
        run_search("s1", teacher=b, resume=True, **{**kw, "cycles": 4})
