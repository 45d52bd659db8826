"""Statistics of the report's cells, computed from a snapshot: mean ± std over seeds, intervals, the verdict test and
its MDE, McNemar (per seed, and clustered by image), per class. docs/intervals.md says how to read them."""

from __future__ import annotations

import numpy as np

from lmmreg.config import Params
from lmmreg.report.snapshot import Snapshot
from lmmreg.stats import (
    clustered_mcnemar,
    components_test,
    mcnemar,
    mean_std,
    per_class_accuracy,
    seed_tests,
    two_level_bootstrap,
)


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
    return run_stats(snap, cell_runs(snap, ds, method), params, mde=True)


def run_stats(snap: Snapshot, runs: list[dict], params: Params, *, mde: bool = False) -> dict | None:
    """Mean ± std over the runs (seeds) of one cell, its two-level bootstrap interval (seeds and test images
    resampled), compactness; None without runs. With `mde`, the true difference from a fixed number (the paper's)
    that the verdict test on this cell's seeds × images finds with 80 % power (`lmmreg.stats.components_test`);
    NaN otherwise (it costs a root-find per cell, and only Tables 1-2 print it)."""
    if not runs:
        return None
    accs = [r["reported_test_acc"] for r in runs]
    mean, std = mean_std(accs)
    key = ("cell", tuple(r["run_id"] for r in runs), params.report.bootstrap, params.report.ci)
    if key not in snap.memo:
        snap.memo[key] = two_level_bootstrap(correct_matrix(snap, runs), n_boot=params.report.bootstrap,
                                             ci=params.report.ci)
    boot = snap.memo[key]
    lo, hi = boot["lo"], boot["hi"]
    ratio = mean_std([r["intra_inter_ratio"] for r in runs])
    sil = mean_std([r["silhouette"] for r in runs])
    test = {"mde": float("nan"), "df": float("nan")}
    if mde:
        tkey = ("cell-test", tuple(r["run_id"] for r in runs))
        if tkey not in snap.memo:
            snap.memo[tkey] = components_test(correct_matrix(snap, runs))
        test = snap.memo[tkey]
    return {"mean": mean, "std": std, "ci_lo": lo, "ci_hi": hi, "n": len(runs), "ratio": ratio, "silhouette": sil,
            "runs": runs, "mde": test["mde"], "df": test["df"]}


def paired_tests(snap: Snapshot, ds: str) -> list[dict]:
    """McNemar lmm_reg vs finetune, per seed, on the same test images (exact: one run each, images independent)."""
    base = {r["seed"]: r for r in cell_runs(snap, ds, "finetune")}
    out = []
    for r in cell_runs(snap, ds, "lmm_reg"):
        if r["seed"] in base:
            m = correct_matrix(snap, [base[r["seed"]], r])
            out.append({"seed": r["seed"], **mcnemar(m[1], m[0])})
    return out


def paired_delta(snap: Snapshot, runs_a: list[dict], runs_b: list[dict], params: Params) -> dict | None:
    """Δ = acc(a) − acc(b) over the seeds both have, paired (same seeds, same test images): the two-level
    bootstrap interval of the difference (`lo`, `hi`); the verdict test over seeds and images (`delta_p`, its
    interval `test_lo`/`test_hi`, effective df `df`, and the MDE: the true Δ it finds with 80 % power); the
    image-clustered McNemar (`mcnemar_p`: exact sign-flip over images, each image's seeds together); and the
    seed-level paired t-test and sign test of the per-seed Δ."""
    b_by_seed = {r["seed"]: r for r in runs_b}
    pairs = [(r, b_by_seed[r["seed"]]) for r in runs_a if r["seed"] in b_by_seed]
    if not pairs:
        return None
    key = ("pair", tuple((a["run_id"], b["run_id"]) for a, b in pairs), params.report.bootstrap, params.report.ci)
    if key not in snap.memo:
        snap.memo[key] = _paired_delta(snap, pairs, params)
    return snap.memo[key]


def _paired_delta(snap: Snapshot, pairs: list[tuple[dict, dict]], params: Params) -> dict:
    ca = correct_matrix(snap, [a for a, _ in pairs] + [b for _, b in pairs])  # [2S, N]: a rows, then b rows
    s = len(pairs)
    diff = ca[:s].astype(np.float64) - ca[s:]  # [S, N] paired differences
    boot = two_level_bootstrap(diff, n_boot=params.report.bootstrap, ci=params.report.ci)
    test = components_test(diff, ci=params.report.ci)
    mc = clustered_mcnemar(ca[:s], ca[s:])
    seed_level = seed_tests(list(diff.mean(axis=1) * 100.0))
    return {"delta": boot["mean"], "lo": boot["lo"], "hi": boot["hi"], "se": boot["se"],
            "delta_p": test["p"], "test_lo": test["lo"], "test_hi": test["hi"], "df": test["df"], "mde": test["mde"],
            "mcnemar_p": mc["p_value"], "a_only": mc["a_only"], "b_only": mc["b_only"], "n": s, **seed_level}


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
    dagger = " †" if unconverged(st["runs"]) else ""
    return f"{fmt(st['mean'])} ± {fmt(st['std'])} [{fmt(st['ci_lo'])}, {fmt(st['ci_hi'])}] (n={st['n']}){dagger}"


def unconverged(runs: list[dict]) -> list[str]:
    """"seed S: reason" for each run tagged as not converged (lmmreg.converged = "false"); a run without the tag
    (an older snapshot) is unknown, not flagged."""
    return [f"seed {r['seed']}: {r.get('converged_reason') or 'no reason given'}" for r in runs
            if str(r.get("converged", "")).lower() == "false"]


def pvalue(p: float) -> str:
    """A p to 3 significant digits; one that underflows a double prints as such, not as 0."""
    return "n/a" if p is None or not np.isfinite(p) else "< 1e-300" if p == 0 else f"{p:.3g}"


def delta_text(d: dict) -> str:
    """A paired Δ in one line: estimate [bootstrap interval] (seeds), the verdict test's p and MDE (the true Δ it
    finds with 80 % power), the clustered McNemar and the seed t-test."""
    return (f"Δ = {d['delta']:+.2f} [{fmt(d['lo'])}, {fmt(d['hi'])}] (n={d['n']}; verdict test p = "
            f"{pvalue(d['delta_p'])}, MDE {fmt(d['mde'])}; clustered McNemar p = {pvalue(d['mcnemar_p'])}; seed "
            f"t-test p = {pvalue(d['t_p'])})")


def df_text(df: float) -> str:
    """Effective degrees of freedom as printed: one decimal, ∞ where the seeds cannot matter."""
    return "∞" if df == float("inf") else fmt(df, 1)
