"""What the light stages import (issue 28): the report reads the registry's declarations without torch; the plan reads
them without importing any method's code, and digests its tensor inputs without torch (lmmreg.digests)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _imported(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_report_stage_imports_no_torch_and_no_method():
    mods = _imported("lmmreg.stages.report")
    assert "torch" not in mods and "open_clip" not in mods
    assert "lmmreg.methods.registry" in mods and not {m for m in mods if m.startswith("lmmreg.methods.")} - {
        "lmmreg.methods.registry"}


def test_the_plan_stage_imports_no_torch_no_method_code_and_no_clip():
    mods = _imported("lmmreg.stages.plan")
    assert "torch" not in mods and "open_clip" not in mods and "lmmreg.methods.registry" in mods
    assert not {m for m in mods if m.startswith("lmmreg.methods.")} - {"lmmreg.methods.registry"}
