"""A search's winner from any space, as ``score`` / ``train`` / ``distill`` students.

Tiny searches (3-4 scored candidates, probe batch 4, one thread) write real run folders; ``score``
of their ``result.json`` must reproduce the search's winner score bit for bit under the search's
recorded settings, options given explicitly must win, and the winners of the ImageNet-sized spaces
(resnet-imagenet, pit) must train and distill at their own 224 px, or fail in one line naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diswot.cli import main
from diswot.distill.students import resolve_student
from diswot.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SEARCH = ["--cycles", "3", "--population", "3", "--sample-size", "2", "--batch-size", "4"]
#: A 224 px synthetic task small enough for one CPU epoch of an ImageNet-sized student in seconds.
TINY_224 = ["--dataset", "synthetic", "--synthetic-train", "2", "--synthetic-test", "2",
            "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--quiet",
            "--json"]  # fmt: skip


def _search(out: Path, space: str, *extra: str) -> dict:
    argv = ["search", "--space", space, *TINY_SEARCH, *extra, "--out", str(out)]
    assert main([*argv, "--no-progress", "--threads", "1", "--json"]) == 0
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def searches(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    """result.json of a pit, a resnet-imagenet and an NB201 search (the last with a CIFAR teacher
    that is not the score command's default, at a batch that is not its default either)."""
    root = tmp_path_factory.mktemp("searches")
    out = {}
    for space, extra in (
        ("pit", ()),
        ("resnet-imagenet", ("--max-params", "12M")),  # a small winner: cheap to train
        ("nb201", ("--teacher", "resnet8")),
    ):
        _search(root / space, space, *extra)
        out[space] = root / space / "result.json"
    return out


def _score(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["score", *argv, "--threads", "1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("space", ["pit", "resnet-imagenet", "nb201"])
def test_score_of_a_result_json_reproduces_the_search(
    space: str, searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    result = json.loads(searches[space].read_text())
    winner, settings = result["winner"], result["settings"]
    out = _score(capsys, "--student", str(searches[space]))
    assert out["student"] == winner["arch"]
    assert out["score"] == winner["score"]  # bit for bit: the search's settings, builder, hooks
    assert out["components"] == winner["components"]
    assert out["params"] == winner["params"]
    if space != "nb201":  # score reports an NB201 cell's FLOPs in NASLib's convention
        assert out["flops"] == winner["flops"]
    assert out["teacher"] == settings["teacher"] and out["batch_size"] == 4
    assert out["num_classes"] == settings["num_classes"]
    assert out["image_size"] == settings["image_size"]
    assert out["seeds"] == settings["probe_seeds"] and out["space"] == space
    assert out["settings_from"] == str(searches[space]) and out["search_score"] == winner["score"]
    # Every option from the search (it recorded no data root: a synthetic probe needs none).
    assert {k for k, v in out["settings_origin"].items() if v != "search"} == {"data_root"}


def test_score_text_says_where_the_settings_came_from(
    searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = searches["pit"]
    winner = json.loads(path.read_text())["winner"]
    assert main(["score", "--student", str(path), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"student {winner['arch']}  teacher resnet56  batch 4")
    assert lines[1].startswith(f"  settings of the search in {path} (space pit, target c100_kd): ")
    assert "224 px" in lines[1] and "100 classes" in lines[1] and "given here" not in lines[1]
    assert lines[2] == f"  the search scored it {winner['score']:.6f} (zico, under its settings)"
    assert lines[6] == f"  zico (the objective): {winner['score']:.6g}"


def test_explicit_options_override_the_search(
    searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = searches["nb201"]
    winner = json.loads(path.read_text())["winner"]
    argv = ["--student", str(path), "--teacher", "resnet14", "--batch-size", "8"]
    out = _score(capsys, *argv, "--num-classes", "10")
    assert (out["teacher"], out["batch_size"], out["num_classes"]) == ("resnet14", 8, 10)
    assert out["settings_origin"]["teacher"] == "given"
    assert out["settings_origin"]["init"] == "search" and out["image_size"] == 32
    assert out["score"] != winner["score"]
    # The same options with the student named directly give the same number.
    direct = _score(capsys, "--student", winner["arch"], *argv[2:], "--num-classes", "10")
    assert direct["score"] == out["score"] and direct["settings_from"] is None
    assert main(["score", *argv, "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "given here: --teacher resnet14 --batch-size 8" in text
    assert "student " in text and "teacher resnet14  batch 8" in text


def test_a_space_arch_by_itself_takes_its_space_defaults(
    searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    winner = json.loads(searches["pit"].read_text())["winner"]
    out = _score(capsys, "--student", winner["arch"], "--batch-size", "4")
    assert out["score"] == winner["score"] and out["settings_from"] is None
    assert (out["teacher"], out["num_classes"], out["image_size"]) == ("resnet56", 100, 224)
    assert out["settings_origin"]["teacher"] == "space"
    assert main(["score", "--student", winner["arch"], "--batch-size", "4", "--threads", "1"]) == 0
    assert "settings: the pit space's defaults: teacher resnet56, 100 classes, 224 px" in (
        capsys.readouterr().out
    )


def test_a_result_json_without_settings(
    tmp_path: Path, searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Older result.json files hold no settings: the folder's settings.json supplies them.
    doc = json.loads(searches["pit"].read_text())
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({"winner": doc["winner"]}))
    (folder / "settings.json").write_text((searches["pit"].parent / "settings.json").read_text())
    assert resolve_student(str(folder / "result.json")).settings == doc["settings"]
    assert (
        _score(capsys, "--student", str(folder / "result.json"))["score"] == doc["winner"]["score"]
    )
    # Neither: the command's defaults, and the header says so.
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"space": "s1", "winner": {"arch": "313", "score": -1.0}}))
    argv = ["score", "--student", str(bare), "--teacher", "resnet8", "--batch-size", "8"]
    assert main([*argv, "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert f"settings: this command's defaults; the search in {bare} (space s1) records no " in text


def test_train_and_evaluate_a_pit_winner_at_its_size(
    tmp_path: Path, searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    winner = json.loads(searches["pit"].read_text())["winner"]
    rc = main(["train", "--model", str(searches["pit"]), *TINY_224, "--out", str(tmp_path / "t")])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["arch"] == winner["arch"] and res["num_classes"] == 10
    assert res["last_top1"] in (0.0, 50.0, 100.0)  # --synthetic-test 2: 0, 1 or 2 right
    ckpt = torch.load(res["checkpoint"], weights_only=False)
    assert ckpt["dataset"]["image_size"] == 224  # the space's size, not the CLI's usual 32
    assert main(["evaluate", "--ckpt", res["checkpoint"], "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(res["last_top1"])


def test_distill_a_pit_winner(
    tmp_path: Path, searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "t56.pt"  # a random ResNet-56 (plain state dict): enough to run the loop
    torch.save(create_model("resnet56", num_classes=10).state_dict(), teacher)
    rc = main(
        ["distill", "--teacher", "resnet56", "--teacher-ckpt", str(teacher), "--student",
         str(searches["pit"]), "--method", "kd", *TINY_224, "--out", str(tmp_path / "d")]
    )  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["method"] == "kd" and res["teacher"] == "resnet56"
    assert res["arch"] == json.loads(searches["pit"].read_text())["winner"]["arch"]


def test_train_a_resnet_imagenet_winner(
    tmp_path: Path, searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    winner = json.loads(searches["resnet-imagenet"].read_text())["winner"]
    argv = ["train", "--model", str(searches["resnet-imagenet"]), *TINY_224]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["arch"] == winner["arch"] and res["num_classes"] == 10


@pytest.mark.parametrize("command", ["train", "distill"])
def test_an_imagenet_sized_student_is_refused_on_cifar_in_one_line(
    command: str,
    tmp_path: Path,
    fake_cifar: Path,
    searches: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    student = str(searches["resnet-imagenet"])
    argv = (
        ["train", "--model", student]
        if command == "train"
        else ["distill", "--teacher", "resnet18", "--teacher-ckpt", str(tmp_path / "t.pt"),
              "--student", student]
    )  # fmt: skip
    out = tmp_path / "o"
    rc = main([*argv, "--dataset", "cifar100", "--data-root", str(fake_cifar), "--epochs", "1",
               "--quiet", "--threads", "1", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("diswot: error:") and "\n" not in err, err
    assert "resnet-imagenet network searched at 224 px" in err and "are 32 px" in err
    assert "--dataset imagefolder" in err and "--image-size 224" in err
    assert not out.exists()


def test_a_vit_winner_at_another_size_is_refused(
    tmp_path: Path, searches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", str(searches["pit"]), "--dataset", "synthetic", "--image-size"]
    argv += ["32", "--epochs", "1", "--quiet", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pit network searched at 224 px but the synthetic images are 32 px" in err
    assert err.endswith("pass --image-size 224 (image_size=224 in Python)") and "\n" not in err


def test_vit_size_error_names_the_cli_flag(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["score", "--teacher", "resnet56", "--student", "pit_ti", "--batch-size", "2"]
    assert main([*argv, "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diswot: error: PiT was built for 224 px images") and "\n" not in err
    assert "--image-size 224" in err and "image_size=32" in err


def test_score_help_still_names_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("default resnet110", "default 64", "default 100", "default 32", "(default)"):
        assert default in text, default


def test_train_model_api_takes_the_students_size(tmp_path: Path, searches: dict[str, Path]) -> None:
    from diswot.distill import train_model

    kw = {"epochs": 1, "batch_size": 2, "synthetic_train": 4, "synthetic_test": 2}
    res = train_model(
        str(searches["pit"]), "synthetic", out=tmp_path / "t", device="cpu", progress=False, **kw
    )
    assert torch.load(res["checkpoint"], weights_only=False)["dataset"]["image_size"] == 224
