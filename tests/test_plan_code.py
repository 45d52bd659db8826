"""The train stage's code reaches DVC through its plan: each plan holds a digest of every source file the train
stage imports (lmmreg.plan.code_digest), so a change to that code rewrites every plan and a change elsewhere none;
a train stage refuses a plan written for other code, naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from lmmreg import plan
from tests.conftest import REPO


def test_the_digest_covers_the_train_stages_imports_and_only_them():
    files = plan.code_digest()["files"]
    assert {"lmmreg/stages/train.py", "lmmreg/engine.py", "lmmreg/losses.py", "lmmreg/methods/coop.py",
            "lmmreg/tracking/runs.py"} <= set(files)
    assert not [f for f in files if f.startswith(("lmmreg/report/", "lmmreg/stages/report.py",
                                                  "lmmreg/stages/summarize.py"))]


def test_the_digest_follows_the_content_of_that_code(tmp_path, monkeypatch):
    shutil.copytree(REPO / "src/lmmreg", tmp_path / "lmmreg", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(plan, "SRC", tmp_path)

    def digest() -> str:
        plan.code_digest.cache_clear()
        return plan.code_digest()["sha256"]

    try:
        first = digest()
        assert digest() == first  # deterministic
        report = tmp_path / "lmmreg/report/tables.py"
        report.write_text(report.read_text() + "\n# a report-only change\n")
        assert digest() == first
        engine = tmp_path / "lmmreg/engine.py"
        engine.write_text(engine.read_text() + "\n# a training change\n")
        assert digest() != first
    finally:
        plan.code_digest.cache_clear()


def test_a_plan_for_other_code_is_refused_by_name(tmp_path):
    path = tmp_path / "lmm_reg.json"
    good = {"format": plan.PLAN_FORMAT, "dataset": "demo", "method": "lmm_reg", "code": plan.code_digest()}
    path.write_text(json.dumps(good))
    assert plan.load_plan(path, dataset="demo", method="lmm_reg")["code"]["sha256"] == good["code"]["sha256"]
    path.write_text(json.dumps({**good, "code": {**good["code"], "sha256": "0" * 64}}))
    with pytest.raises(ValueError, match=rf"{path}: planned for other code .*re-run `dvc repro`"):
        plan.load_plan(path, dataset="demo", method="lmm_reg")
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "code"}))  # a plan from before the digest
    with pytest.raises(ValueError, match="planned for other code"):
        plan.load_plan(path, dataset="demo", method="lmm_reg")


def test_a_train_stage_checks_the_plans_own_file_list_without_walking_the_imports(tmp_path, monkeypatch):
    """load_plan re-hashes the files the plan lists (no import-graph walk): an edit to any of them, or one gone,
    refuses the plan, naming it; the digest of the list is code_digest's own."""
    shutil.copytree(REPO / "src/lmmreg", tmp_path / "lmmreg", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(plan, "SRC", tmp_path)
    plan.code_digest.cache_clear()
    try:
        code = plan.code_digest()
        assert plan.files_digest(code["files"]) == code["sha256"]
        path = tmp_path / "lmm_reg.json"
        path.write_text(json.dumps({"format": plan.PLAN_FORMAT, "dataset": "demo", "method": "lmm_reg", "code": code}))

        def no_walk(*a, **k):
            raise AssertionError("load_plan walked the import graph")

        monkeypatch.setattr(plan, "source_files", no_walk)
        assert plan.load_plan(path, dataset="demo", method="lmm_reg")["code"] == code
        losses = tmp_path / "lmmreg/losses.py"
        original = losses.read_text()
        losses.write_text(original + "\n# a training change\n")
        with pytest.raises(ValueError, match=rf"{path}: planned for other code"):
            plan.load_plan(path, dataset="demo", method="lmm_reg")
        losses.write_text(original)
        assert plan.load_plan(path, dataset="demo", method="lmm_reg")
        (tmp_path / "lmmreg/engine.py").unlink()
        with pytest.raises(ValueError, match=rf"{path}: planned for other code"):
            plan.load_plan(path, dataset="demo", method="lmm_reg")
    finally:
        plan.code_digest.cache_clear()
