"""``--precision``: bf16 student forwards under autocast, fp16 refused (it overflows), and
part of the fixed settings of rank and search run folders (a resume never mixes precisions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.rank import run_rank
from diswot.scoring import Scorer, check_precision
from diswot.search import run_search

pytestmark = pytest.mark.usefixtures("one_thread")

CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
S1 = ["111", "135", "333"]
FAST = dict(teacher="resnet8", batch_size=8, progress=False)


def _scorer(precision: str, init: str = "gaussian") -> Scorer:
    return Scorer("resnet8", batch_size=8, init=init, precision=precision)


def test_bf16_runs_the_student_pass_in_bf16_and_hands_fp32_on() -> None:
    seen: list[torch.dtype] = []
    scorer = _scorer("bf16")
    probe = scorer.probe("111", 0)
    probe.model.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    f = probe.features
    assert seen == [torch.bfloat16]  # the classifier ran under autocast
    assert {f.logits.dtype, f.feature_map.dtype, f.pooled.dtype} == {torch.float32}
    # The teacher, computed once per seed, stays fp32, and so do the scores' inputs.
    assert scorer.teacher(0).feature_map.dtype == torch.float32


def test_bf16_scores_stay_close_to_fp32() -> None:
    ref, low = _scorer("fp32"), _scorer("bf16")
    for arch in ("111", "333", "531"):
        a = ref.evaluate(arch, ["diswot", "ms", "mr"], 0)
        b = low.evaluate(arch, ["diswot", "ms", "mr"], 0)
        for p in ("diswot", "ms", "mr"):
            assert math.isfinite(b[p]) and b[p] != a[p]  # it did run in another precision
            assert abs(b[p] - a[p]) <= 0.1 * abs(a[p]), (arch, p, a[p], b[p])


def test_unusable_precisions_are_refused_up_front() -> None:
    with pytest.raises(DiswotError, match="unknown precision 'fp8'; use fp32 or bf16"):
        check_precision("fp8")
    for init in ("gaussian", "default"):  # it overflows under either (benchmarks/precision.py)
        with pytest.raises(DiswotError, match="fp16 overflows .* use --precision bf16"):
            Scorer("resnet8", precision="fp16", init=init)
    # rank and search refuse before any work, also when only workers would build a Scorer.
    with pytest.raises(DiswotError, match="fp16 overflows"):
        run_rank("s1", archs=S1, precision="fp16", workers=2, **FAST)
    with pytest.raises(DiswotError, match="fp16 overflows"):
        run_search("s1", teacher="resnet8", batch_size=4, cycles=2, precision="fp16")


def test_cli_reports_a_one_line_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["score", "--student", CELL, "--teacher", "resnet8", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diswot: error: fp16 overflows")


def test_rank_folder_fixes_the_precision(tmp_path: Path) -> None:
    run_rank("s1", proxies="diswot", archs=S1, out_dir=tmp_path, precision="bf16", **FAST)
    meta = json.loads((tmp_path / "settings.json").read_text())
    assert meta["settings"]["precision"] == "bf16"
    with pytest.raises(DiswotError, match="different precision"):
        run_rank("s1", proxies="diswot", archs=S1, out_dir=tmp_path, **FAST)
    # A folder written before the setting existed holds fp32 scores and resumes as fp32.
    old = tmp_path / "old"
    run_rank("s1", proxies="diswot", archs=S1, out_dir=old, **FAST)
    meta = json.loads((old / "settings.json").read_text())
    del meta["settings"]["precision"]
    (old / "settings.json").write_text(json.dumps(meta))
    res = run_rank("s1", proxies="diswot,mr", archs=S1, out_dir=old, **FAST)
    assert {"diswot", "mr"} <= set(res.scores["111"][0])


def test_search_folder_fixes_the_precision(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = ["search", "--space", "s1", "--teacher", "resnet8", "--max-params", "100k",
            "--batch-size", "4", "--cycles", "3", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main([*argv, "--precision", "bf16"]) == 0
    settings = json.loads((out / "settings.json").read_text())["settings"]
    assert settings["precision"] == "bf16"
    capsys.readouterr()
    # --resume alone keeps bf16; asking for fp32 on it is a one-line error.
    assert main(["search", "--resume", str(out), "--no-progress", "--cycles", "4"]) == 0
    assert main(["search", "--resume", str(out), "--precision", "fp32"]) == 2
    assert "precision='bf16' (now 'fp32')" in capsys.readouterr().err
