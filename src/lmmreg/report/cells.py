"""Statistics of the report's cells, computed from a snapshot: mean ± std over seeds, intervals, McNemar, per class."""

from __future__ import annotations

import numpy as np

from lmmreg.config import Params
from lmmreg.report.snapshot import Snapshot
from lmmreg.stats import bootstrap_ci, mcnemar, mean_std, per_class_accuracy


def cell_runs(snap: Snapshot, ds: str, method: str) -> list[dict]:
    return sorted((r for r in snap.runs if r["role"] == "current" and r["dataset"] == ds and r["method"] == method),
                  key=lambda r: r["seed"])


def correct_matrix(snap: Snapshot, runs: list[dict]) -> np.ndarray:
    """[S, N] bool: run s correct on test image n; images aligned by id across runs."""
    ref_ids = snap.predictions[runs[0]["run_id"]]["ids"]
    mats = []
    for r in runs:
        p = snap.predictions[r["run_id"]]
        if p["ids"] != ref_ids:
            raise ValueError(f"run {r['run_id']}: test images differ from run {runs[0]['run_id']}")
        mats.append(np.asarray(p["labels"]) == np.asarray(p["preds"]))
    return np.stack(mats)


def cell_stats(snap: Snapshot, ds: str, method: str, params: Params) -> dict | None:
    return run_stats(snap, cell_runs(snap, ds, method), params)


def run_stats(snap: Snapshot, runs: list[dict], params: Params) -> dict | None:
    """Mean ± std over the runs (seeds) of one cell, the bootstrap interval, compactness; None without runs."""
    if not runs:
        return None
    accs = [r["reported_test_acc"] for r in runs]
    mean, std = mean_std(accs)
    correct = correct_matrix(snap, runs).mean(axis=0)  # per-image fraction of seeds correct
    lo, hi = bootstrap_ci(correct, n_boot=params.report.bootstrap, ci=params.report.ci, seed=0)
    ratio = mean_std([r["intra_inter_ratio"] for r in runs])
    sil = mean_std([r["silhouette"] for r in runs])
    return {"mean": mean, "std": std, "ci_lo": lo, "ci_hi": hi, "n": len(runs), "ratio": ratio, "silhouette": sil,
            "runs": runs}


def paired_tests(snap: Snapshot, ds: str) -> list[dict]:
    """McNemar lmm_reg vs finetune, per seed, on the same test images."""
    base = {r["seed"]: r for r in cell_runs(snap, ds, "finetune")}
    out = []
    for r in cell_runs(snap, ds, "lmm_reg"):
        if r["seed"] in base:
            m = correct_matrix(snap, [base[r["seed"]], r])
            out.append({"seed": r["seed"], **mcnemar(m[1], m[0])})
    return out


def per_class_delta(snap: Snapshot, ds: str, classes: list[str]) -> list[tuple[str, float, float, float]]:
    """(class, finetune acc, lmm_reg acc, delta) averaged over seeds, sorted by delta."""
    accs = {}
    for method in ("finetune", "lmm_reg"):
        runs = cell_runs(snap, ds, method)
        if not runs:
            return []
        per_run = [per_class_accuracy(np.asarray(snap.predictions[r["run_id"]]["labels"]),
                                      np.asarray(snap.predictions[r["run_id"]]["preds"]), len(classes)) for r in runs]
        accs[method] = np.nanmean(np.stack(per_run), axis=0)
    rows = [(c, float(accs["finetune"][i]), float(accs["lmm_reg"][i]), float(accs["lmm_reg"][i] - accs["finetune"][i]))
            for i, c in enumerate(classes)]
    return sorted(rows, key=lambda t: (t[3], t[0]))


def fmt(v: float, nd: int = 2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def cell_text(st: dict | None, ci: float) -> str:
    if st is None:
        return "missing"
    return f"{fmt(st['mean'])} ± {fmt(st['std'])} [{fmt(st['ci_lo'])}, {fmt(st['ci_hi'])}] (n={st['n']})"
