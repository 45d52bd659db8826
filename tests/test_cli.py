"""`lmmreg.cli.run_stage`: the user's errors end a stage with one line (exit 2); a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmmreg.errors import InputError, UserError
from tests.conftest import REPO

STAGE = """
import sys
from lmmreg.cli import run_stage, stage_parser
from lmmreg.errors import InputError

def main(args, params):
    raise {exc}

run_stage(main, stage_parser(None))
"""


def run_stage_raising(exc: str, tmp_path, params: str = str(REPO / "params.yaml")) -> subprocess.CompletedProcess:
    """A stage whose main raises `exc` (source text), run as DVC runs one."""
    stage = tmp_path / "stage.py"
    stage.write_text(STAGE.format(exc=exc))
    return subprocess.run([sys.executable, str(stage), "--params", params], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("exc", [
    "InputError('data/features/demo.pt and data/text/demo hold different images (e.g. [1]); re-run dvc repro')",
    "FileNotFoundError('data/plans/demo/finetune.json: no plan for demo/finetune')",
])
def test_user_error_is_one_line(exc, tmp_path):
    done = run_stage_raising(exc, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if " ERROR " in ln]
    assert line.endswith(eval(exc).args[0])  # the message itself, nothing around it


def test_config_error_is_one_line(tmp_path):
    done = run_stage_raising("AssertionError('not reached')", tmp_path, params=str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "missing.yaml: not found" in done.stderr and "not reached" not in done.stderr


@pytest.mark.parametrize("exc", ["KeyError('head.weight')", "ValueError('shapes [8, 512] and [10, 512] differ')"])
def test_a_bug_keeps_its_traceback(exc, tmp_path):
    done = run_stage_raising(exc, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr and f"in main\n    raise {exc}\n" in done.stderr


def test_misaligned_artifacts_are_the_users_error():
    """A stale artifact is fixed by re-running DVC, not by reading a traceback: an InputError (still a ValueError)."""
    import torch

    from lmmreg.artifacts import Artifact, check_aligned

    a = Artifact(["x", "y"], torch.tensor([0, 1]), {})
    b = Artifact(["x", "z"], torch.tensor([0, 1]), {})
    with pytest.raises(InputError, match="hold different images") as err:
        check_aligned(a, b, names=("features", "text"))
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
