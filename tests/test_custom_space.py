"""A user's own search space, given as ``--space path/to/file.py:NAME`` or ``package.module:NAME``.

The shipped example (``examples/my_space.py``) is loaded both ways and searched through the CLI;
every way a spec can be wrong gives one line and exit status 2.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diswot.cli import main
from diswot.errors import DiswotError
from diswot.spaces import SPACES, SearchSpace, get_space, list_spaces
from diswot.spaces.base import INTERFACE, missing_methods

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "my_space.py"


def test_the_example_loads_by_path():
    spec = f"{EXAMPLE}:MySpace"
    sp = get_space(spec)
    assert isinstance(sp, SearchSpace) and type(sp).__name__ == "MySpace"
    assert sp.name == spec  # what a run folder records, so it can be loaded again
    assert get_space(spec) is sp and get_space(f"  {spec} ") is sp  # shared, like a registered one
    assert sp.dataset().num_classes == 100 and sp.size() == 48 and len(sp.enumerate()) == 48
    rng = random.Random(0)
    a = sp.sample(rng)
    assert sp.validate(a) == a and sp.mutate(a, rng) != a
    assert sp.cost(a, 100, 32).params > 0
    assert spec not in list_spaces()  # a spec is loaded, not registered


def test_the_example_loads_by_module_and_as_an_instance(monkeypatch):
    monkeypatch.chdir(REPO)
    sp = get_space("examples.my_space:MySpace")
    assert type(sp).__name__ == "MySpace" and sp.name == "examples.my_space:MySpace"
    small = get_space(f"{EXAMPLE}:small")  # a module-level instance, copied
    assert small.dataset().num_classes == 10 and small.name == f"{EXAMPLE}:small"
    module = sys.modules[type(small).__module__]
    assert module.small.name == ""  # the user's own object is left as it was
    five = get_space(f"{EXAMPLE}:MySpace", num_classes=5)  # keywords: a new instance
    assert five.dataset().num_classes == 5 and five is not get_space(f"{EXAMPLE}:MySpace")


def test_a_loaded_space_pickles_as_its_spec(tmp_path):
    """A worker process (spawned) gets the space by loading the spec again."""
    spec = f"{EXAMPLE}:MySpace"
    sp = get_space(spec)
    blob = pickle.dumps(sp)
    assert pickle.loads(blob) is sp
    code = (
        "import pickle, sys; sp = pickle.load(sys.stdin.buffer); print(type(sp).__name__, sp.name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, check=True, cwd=tmp_path
    )
    assert out.stdout.decode().split() == ["MySpace", spec]


def test_a_name_the_file_registers(tmp_path, monkeypatch):
    monkeypatch.setattr(SPACES, "_items", dict(SPACES._items))  # the registration stays here
    src = EXAMPLE.read_text() + textwrap.dedent(
        """
        from diswot.spaces import register_space

        @register_space("my-registered")
        class Registered(MySpace):
            pass
        """
    )
    path = tmp_path / "registering.py"
    path.write_text(src)
    sp = get_space(f"{path}:my-registered")
    assert type(sp).__name__ == "Registered" and sp.name == f"{path}:my-registered"
    assert get_space(f"{path}:Registered").name == f"{path}:Registered"  # same file, imported once


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("diswot: error")]
    assert len(lines) == 1, lines
    return lines[0]


def _space_error(capsys, spec: str) -> str:
    return _cli_error(capsys, ["search", "--space", spec, "--cycles", "1", "--no-progress"])


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_spec_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _space_error(capsys, "nothere/my_space.py:MySpace")
    assert "space file nothere/my_space.py does not exist" in err
    bad = _write(tmp_path / "bad.py", "import math\n\nraise ValueError('boom')\n")
    err = _space_error(capsys, f"{bad}:X")
    assert f"space file {bad} does not import: ValueError: boom (line 3)" in err
    syntax = _write(tmp_path / "syntax.py", "def f(:\n")
    assert "does not import: SyntaxError: " in _space_error(capsys, f"{syntax}:X")
    err = _space_error(capsys, f"{EXAMPLE}:Nope")
    assert "has no attribute 'Nope'" in err and "it defines MySpace" in err
    err = _space_error(capsys, "no_such_package.spaces:MySpace")
    assert "no module named 'no_such_package'" in err
    assert "needs the form" in _space_error(capsys, f"{EXAMPLE}:")
    # A module that imports a missing dependency says which.
    _write(tmp_path / "needs_dep.py", "import not_installed_dependency\n")
    err = _space_error(capsys, "needs_dep:X")
    assert "module needs_dep does not import: ModuleNotFoundError: No module named" in err


def test_objects_without_the_interface_name_what_they_lack(tmp_path, capsys):
    path = _write(
        tmp_path / "partial.py",
        """
        import random
        from diswot.spaces import SearchSpace

        class Duck:
            def sample(self, rng):
                return "x"

        class Half(SearchSpace):
            def dataset(self, target=None):
                raise NotImplementedError

            def validate(self, arch):
                return arch

            def sample(self, rng):
                return "x"

        def factory():
            return None
        """,
    )
    err = _space_error(capsys, f"{path}:Duck")
    assert "is Duck, not a SearchSpace (it lacks dataset, mutate, crossover, validate" in err
    assert "derive the class from diswot.spaces.SearchSpace" in err
    assert "does not implement build, mutate" in _space_error(capsys, f"{path}:Half")
    assert "is a function, not a SearchSpace" in _space_error(capsys, f"{path}:factory")
    assert "is a tuple, not a SearchSpace" in _space_error(capsys, f"{EXAMPLE}:DEPTHS")


def test_missing_methods_lists_the_interface():
    assert missing_methods(object()) == list(INTERFACE)
    assert {"dataset", "sample", "mutate", "validate", "build", "cost"} <= set(INTERFACE)
    assert missing_methods(get_space("s1")) == [] and missing_methods(type(get_space("s1"))) == []


def test_register_refuses_a_name_with_a_colon():
    from diswot.spaces import register_space

    with pytest.raises(DiswotError, match="may not hold ':'"):
        register_space("a:b")(type(get_space("s1")))


def test_search_resume_and_score_on_the_example_through_the_cli(tmp_path, capsys):
    spec = f"{EXAMPLE}:MySpace"
    out = tmp_path / "run"
    argv = ["search", "--space", spec, "--algorithm", "evolution", "--cycles", "4",
            "--population", "3", "--sample-size", "2", "--batch-size", "8",
            "--out", str(out), "--no-progress", "--json"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["space"] == spec
    winner = result["winner"]["arch"]
    assert get_space(spec).validate(winner) == winner and doc["winner"]["arch"] == winner
    assert main(["search", "--resume", str(out), "--cycles", "6", "--no-progress"]) == 0
    assert sum(1 for _ in (out / "candidates.jsonl").open()) >= 6
    capsys.readouterr()
    # The result names the space by its spec: score (and train/distill) load it from there.
    assert main(["score", "--student", str(out / "result.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["student"] == winner


def test_rank_on_the_example_with_measured_accuracies(tmp_path, capsys):
    space_file = tmp_path / "my_space.py"
    shutil.copy(EXAMPLE, space_file)
    spec = f"{space_file}:small"
    argv = ["rank", "--space", spec, "--proxy", "diswot", "--batch-size", "8",
            "--out", str(tmp_path / "rank"), "--no-progress", "--json"]  # fmt: skip
    assert "rank needs measured accuracies of at least 2 students" in _cli_error(capsys, argv)
    # Test data: the plumbing is checked, the numbers mean nothing.
    (tmp_path / "my_space_accuracy.csv").write_text(
        "arch,top1\nd11w16,60.5\nd22w32,66.0\nd34w48,70.1\n"
    )
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["space"] == spec and doc["n_archs"] == 3 and doc["targets"] == ["measured"]
