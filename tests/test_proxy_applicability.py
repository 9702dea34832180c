"""Which proxies apply to which space, and which targets ``rank`` picks by default.

* ``ProxySpec.needs_batchnorm`` (zen) against ``SearchSpace.has_batchnorm`` (False for the ViTs):
  ``--proxy all`` skips such proxies with a one-line note, naming one is a one-line error.
* ``diswot rank --space autoformer`` with no ``--target``: only 100 of the 200 students have the
  companion ``c100_base`` target, so the default keeps ``c100_kd`` alone (with a note); a named
  target on the default student set ranks the students that have it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.proxies import PROXIES, get_proxy, list_proxies, resolve_proxies
from diswot.rank import _plan, parse_proxies
from diswot.spaces import get_space, list_spaces
from diswot.spaces.base import SearchSpace

PLAN = {
    "teacher": None,
    "proxies": "params",
    "seeds": 1,
    "batch_size": 8,
    "sample": None,
    "sample_seed": 0,
    "archs": None,
    "init": "gaussian",
    "data": "synthetic",
    "device": "cpu",
    "shard": None,
}


def _note(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("diswot: note:")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------ needs_batchnorm


def test_only_bn_statistics_proxies_carry_the_flag() -> None:
    flagged = {n for n in list_proxies() if PROXIES.get(n).needs_batchnorm}
    assert flagged == {"zen"}
    assert get_proxy("nwot").needs_batchnorm is False  # GELU-aware, runs on transformers


def test_spaces_declare_batchnorm_and_vits_have_none() -> None:
    assert SearchSpace.has_batchnorm is True
    flags = {name: get_space(name).has_batchnorm for name in list_spaces()}
    assert flags["autoformer"] is False and flags["pit"] is False
    assert flags["s1"] is True and flags["nb201"] is True
    for name in ("autoformer", "pit"):  # the flag tells the truth about the networks
        space = get_space(name)
        with torch.device("meta"):
            net = space.build(space.rank_archs()[0], 10)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    with torch.device("meta"):
        s1 = get_space("s1").build("111", 10)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in s1.modules())


def test_all_skips_bn_proxies_with_one_note(capsys: pytest.CaptureFixture) -> None:
    names = resolve_proxies("all", has_batchnorm=False, space="pit")
    assert "zen" not in names and {"diswot", "nwot", "synflow"} <= set(names)
    note = _note(capsys.readouterr().err)
    assert "zen" in note and "pit" in note and "BatchNorm" in note
    # A space with BatchNorm (the default) keeps zen and prints nothing.
    assert "zen" in resolve_proxies("all")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("spec", ["zen", "diswot,zen", ["zen", "params"]])
def test_naming_a_bn_proxy_is_a_one_line_error(spec) -> None:
    with pytest.raises(DiswotError) as exc:
        resolve_proxies(spec, has_batchnorm=False, space="autoformer")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "'zen'" in msg and "autoformer" in msg and "--proxy all skips it" in msg


def test_rank_parses_proxies_for_the_space(capsys: pytest.CaptureFixture) -> None:
    pit = get_space("pit")
    names, ens = parse_proxies("all,diswot+params", has_teacher=True, space=pit)
    assert "zen" not in names and ens == {"diswot+params": ["diswot", "params"]}
    assert "zen" in _note(capsys.readouterr().err)
    with pytest.raises(DiswotError, match="BatchNorm"):
        parse_proxies("zen+params", has_teacher=True, space=pit)  # an ensemble member too
    names, _ = parse_proxies("all", has_teacher=True, space=get_space("s1"))
    assert "zen" in names


def test_cli_rank_zen_on_a_vit_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["rank", "--space", "pit", "--proxy", "zen", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diswot: error:") and "\n" not in err and "BatchNorm" in err


# ------------------------------------------------------------------------ default targets


def test_autoformer_default_target_drops_the_partial_companion(
    capsys: pytest.CaptureFixture,
) -> None:
    plan = _plan("autoformer", target=None, **PLAN)
    assert plan.targets == ["c100_kd"] and len(plan.archs) == 200
    assert set(plan.truth) == {"c100_kd"}
    note = _note(capsys.readouterr().err)
    assert "c100_base" in note and "100 of 200" in note and "--target c100_base" in note


def test_full_companions_stay_in_the_default() -> None:
    assert _plan("pit", target=None, **PLAN).targets == ["c100_kd", "c100_base"]
    assert _plan("s1", target=None, **PLAN).targets == ["kd", "cls"]
    # A sample that happens to lie in part 1 (all targets) keeps the companion too.
    part1 = list(get_space("autoformer").ground_truth("c100_base"))[:5]
    plan = _plan("autoformer", target=None, **{**PLAN, "archs": part1})
    assert plan.targets == ["c100_kd", "c100_base"]


def test_named_partial_target_ranks_the_students_that_have_it(
    capsys: pytest.CaptureFixture,
) -> None:
    plan = _plan("autoformer", target="c100_base", **PLAN)
    assert plan.targets == ["c100_base"]
    assert plan.archs == [
        a for a in get_space("autoformer").rank_archs() if a in plan.truth["c100_base"]
    ]
    assert len(plan.archs) == 100
    assert "100 of 200" in _note(capsys.readouterr().err)
    plan = _plan("autoformer", target="c100_kd,c100_base", **PLAN)
    assert len(plan.archs) == 100


def test_explicit_archs_without_the_target_still_refuse() -> None:
    af = get_space("autoformer")
    part2 = [a for a in af.rank_archs() if a not in af.ground_truth("c100_base")][:3]
    with pytest.raises(DiswotError, match="no c100_base ground truth"):
        _plan("autoformer", target="c100_base", **{**PLAN, "archs": part2})


def test_cli_rank_autoformer_without_target(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["rank", "--space", "autoformer", "--proxy", "params", "--sample", "8"]
    argv += ["--no-progress", "--json", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["targets"] == ["c100_kd"] and out["n_archs"] == 8
    assert {c["target"] for c in out["correlations"]} == {"c100_kd"}


def test_search_refuses_a_batchnorm_proxy_on_a_batchnorm_free_space() -> None:
    from diswot.search import run_search

    with pytest.raises(DiswotError, match="space 'pit' has no BatchNorm; drop 'zen'") as info:
        run_search("pit", proxy="zen", cycles=2)
    assert "\n" not in str(info.value)
