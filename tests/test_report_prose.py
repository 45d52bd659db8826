"""What the report says fits the data: one study point is named once; an unconverged run gets a dagger and its
reason; a snapshot without the convergence columns reads as unknown."""

from __future__ import annotations

import json

import pytest

from lmmreg.config import parse_params
from lmmreg.identity import study_point
from lmmreg.report import Snapshot, read_snapshot, write_snapshot
from lmmreg.report.study_answer import study_answer
from lmmreg.report.tables import build_tables
from tests.conftest import small_raw_params

N = 40


@pytest.fixture
def params():
    return parse_params(small_raw_params(**{"report.bootstrap": 100}))


def _snap(params, converged: dict[tuple[str, int], tuple[str, str]] | None = None) -> Snapshot:
    """The current point only: finetune right on 20 of 40 images, lmm_reg on 30 (the same 20 plus 10)."""
    point = json.dumps(study_point(params), sort_keys=True)
    labels = [0, 1] * (N // 2)
    runs, preds = [], {}
    for method, k in (("finetune", 20), ("lmm_reg", 30)):
        for seed in (0, 1):
            rid = f"{method}{seed}"
            preds[rid] = {"ids": [f"i{i}" for i in range(N)], "labels": labels,
                          "preds": [y if i < k else 1 - y for i, y in enumerate(labels)]}
            row = {"dataset": "demo", "method": method, "seed": seed, "alpha": "0.01", "role": "current",
                   "run_id": rid, "config_id": method, "ablation_id": "a", "reported_test_acc": 2.5 * k,
                   "final_test_acc": 2.5 * k, "best_test_acc": 2.5 * k, "reported_epoch": 1,
                   "intra_inter_ratio": 0.5, "silhouette": 0.1, "demo": "True", "point": point,
                   "n_train_images": 24, "train_steps": 10, "reg_ce_ratio_first": 1.0, "reg_ce_ratio_last": 1.0}
            if converged is not None:
                flag, reason = converged.get((method, seed), ("true", ""))
                row |= {"converged": flag, "converged_reason": reason}
            runs.append(row)
    return Snapshot(runs, {r["run_id"]: [(1, r["reported_test_acc"])] for r in runs}, preds, [])


def test_one_study_point_is_named_once(params):
    note = study_answer(_snap(params), "demo", params)
    assert note.startswith("one study point so far: LMM-Reg. beats the baseline, Δ = +25.00 [")
    assert "Highest" not in note and "Lowest" not in note and note.count("Δ =") == 1
    assert "MDE" in note and "seed t-test p = n/a" in note  # both seeds' Δ are equal: no t-test


def test_an_unconverged_run_is_marked_with_its_reason(params, tmp_path):
    snap = _snap(params, {("lmm_reg", 1): ("false", "train loss still falling at the last epoch")})
    write_snapshot(snap, tmp_path)
    md, _, _ = build_tables(read_snapshot(tmp_path), params, {"demo": ["a", "b"]})
    row = next(ln for ln in md.splitlines() if ln.startswith("| LMM-Reg.-CLIP (Proposed) |"))  # Table 1
    assert "(n=2) †" in row
    assert ("† Did not converge (under-trained run, cell kept): LMM-Reg.-CLIP (Proposed), Demo (synthetic), seed 1: "
            "train loss still falling at the last epoch.") in md
    base = next(ln for ln in md.splitlines() if ln.startswith("| Finetuning w/o Reg. (Baseline) |"))
    assert "†" not in base


def test_a_snapshot_without_convergence_columns_marks_nothing(params, tmp_path):
    write_snapshot(_snap(params), tmp_path)
    runs_csv = (tmp_path / "runs.csv").read_text().splitlines()
    assert runs_csv[0].endswith(",converged,converged_reason") and runs_csv[1].endswith(",,")  # unknown
    md, _, _ = build_tables(read_snapshot(tmp_path), params, {"demo": ["a", "b"]})
    table1 = md.split("## Table 1")[1].split("## Table 2")[0]
    assert "(n=2)" in table1 and "†" not in table1
