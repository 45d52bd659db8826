"""dvc.yaml owns paths and order: every stage runs its module, and its deps list exactly what it imports (the train
stages' code through their plan file: the plan stage's deps cover it, and each plan holds its digest)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

SRC = REPO / "src"


def imported_files(module: str) -> set[Path]:
    """Every lmmreg source file `module` imports, transitively (lmmreg.plan.source_files: lazy imports and
    modules named by a constant string included)."""
    from lmmreg.plan import SRC, code_digest, source_files

    files = set(source_files(module))
    if module == f"lmmreg.stages.{CODE_IN_PLAN['train']}":  # the plan digests the train stage's code, methods included
        files |= {SRC / f for f in code_digest()["files"]}
    return files


# A train stage's code reaches DVC through its plan file (lmmreg.plan.code_digest), not through src deps.
CODE_IN_PLAN = {"train": "plan"}


def _stages() -> dict[str, dict]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: (s["do"] if "do" in s else s) for name, s in spec.items()}


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_exactly_its_imports(stage):
    spec = _stages()[stage]
    # bin/python: the project's python without an activated venv (test_launcher_* below).
    assert (" ".join(spec["cmd"].split()) + " ").startswith(f"bin/python -m lmmreg.stages.{stage} ")
    src_deps = [REPO / d for d in spec["deps"] if d.startswith("src/")]
    if stage in CODE_IN_PLAN:
        assert not src_deps, f"stage {stage}: its code is in the plan's digest; deps list {src_deps}"
        return
    imports = imported_files(f"lmmreg.stages.{stage}")

    def covered(f: Path) -> bool:
        return any(f == d or d in f.parents for d in src_deps)

    uncovered = sorted(str(f.relative_to(REPO)) for f in imports if not covered(f))
    assert not uncovered, f"stage {stage}: deps miss {uncovered}"
    unused = sorted(str(d.relative_to(REPO)) for d in src_deps if not any(f == d or d in f.parents for f in imports))
    assert not unused, f"stage {stage}: deps list {unused}, which it does not import"


def _launch(launcher: Path, env: dict) -> list[str]:
    """(sys.executable, where lmmreg was imported from) as the launcher's python sees them."""
    out = subprocess.run([str(launcher), "-c", "import sys, lmmreg; print(sys.executable); print(lmmreg.__file__)"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return out.split()


def test_launcher_uses_the_project_venv_without_activation():
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    exe, module = _launch(REPO / "bin/python", env)
    assert exe == str(REPO / ".venv/bin/python") and module == str(SRC / "lmmreg/__init__.py")


def test_launcher_in_a_temp_checkout_uses_dvc_roots_venv_and_its_own_src(tmp_path):
    # A queued experiment runs in a temp checkout (no .venv) with DVC_ROOT = the project: the project's venv,
    # but the checkout's code.
    shutil.copytree(REPO / "bin", tmp_path / "bin")
    shutil.copytree(SRC / "lmmreg", tmp_path / "src/lmmreg", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "DVC_ROOT": str(REPO)}
    exe, module = _launch(tmp_path / "bin/python", env)
    assert exe == str(REPO / ".venv/bin/python") and module == str(tmp_path / "src/lmmreg/__init__.py")
    # Neither has a venv: python3 from PATH.
    env.update(DVC_ROOT=str(tmp_path), PATH=f"{REPO / '.venv/bin'}:/usr/bin:/bin")
    exe, _ = _launch(tmp_path / "bin/python", env)
    assert exe == str(REPO / ".venv/bin/python3")


@pytest.mark.parametrize("stage", ["plan", "report"])
def test_stage_params_are_the_describe_settings_runs_log(stage):
    """dvc.yaml cannot import Python: its lists of describe params must be lmmreg's own (runs log the same keys)."""
    from lmmreg.describe.setting import DESCRIBE_KEYS

    params = [p for p in _stages()[stage]["params"] if isinstance(p, str)]
    assert [p.removeprefix("describe.") for p in params if p.startswith("describe.")] == list(DESCRIBE_KEYS)


def test_describe_depends_on_the_import_file_from_params():
    spec = _stages()["describe"]
    assert "${describe.import_file}" in spec["deps"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    placeholder = REPO / params["describe"]["import_file"]
    assert placeholder.is_file() and placeholder.stat().st_size == 0  # tracked, empty: other backends ignore it
    ignored = subprocess.run(["git", "check-ignore", "-q", str(placeholder)], cwd=REPO).returncode == 0
    assert not ignored, f"{placeholder} must be committed: DVC needs the dependency in every clone"


def test_bytecode_written_into_src_changes_no_stage(tmp_path):
    """A stage importing a module first writes __pycache__/ into src/; the project's .dvcignore keeps that out of
    a directory dependency's hash (dvc.yaml lists src/lmmreg/tracking, src/lmmreg/data ...), while a source edit
    still counts."""
    from tests.dvc_repo import DVC, git_env, run

    repo, env = tmp_path / "repo", git_env()
    repo.mkdir()
    run(["git", "init", "-q"], repo, env)
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    run([DVC, "init", "-q"], repo, env)
    pkg = repo / "src/pkg"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    stage = {"cmd": "echo ok > out.txt", "deps": ["src/pkg"], "outs": ["out.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": stage}}))
    run([DVC, "repro"], repo, env)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__/a.cpython-311.pyc").write_bytes(b"\0" * 16)
    assert "Data and pipelines are up to date." in run([DVC, "status"], repo, env)
    (pkg / "a.py").write_text("x = 2\n")
    assert "modified:" in run([DVC, "status"], repo, env)
