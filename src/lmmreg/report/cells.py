"""Statistics of the report's cells, computed from a snapshot: mean ± std over seeds, intervals, McNemar, per class."""

from __future__ import annotations

import numpy as np

from lmmreg.config import Params
from lmmreg.report.snapshot import Snapshot
from lmmreg.stats import (
    mcnemar,
    mean_std,
    minimum_detectable_effect,
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
    return run_stats(snap, cell_runs(snap, ds, method), params)


def run_stats(snap: Snapshot, runs: list[dict], params: Params) -> dict | None:
    """Mean ± std over the runs (seeds) of one cell, its two-level bootstrap interval (seeds and test images
    resampled), compactness; None without runs."""
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
    return {"mean": mean, "std": std, "ci_lo": lo, "ci_hi": hi, "n": len(runs), "ratio": ratio, "silhouette": sil,
            "runs": runs, "mde": minimum_detectable_effect(boot["se"]) if np.isfinite(boot["se"]) else float("nan")}


def paired_tests(snap: Snapshot, ds: str) -> list[dict]:
    """McNemar lmm_reg vs finetune, per seed, on the same test images."""
    base = {r["seed"]: r for r in cell_runs(snap, ds, "finetune")}
    out = []
    for r in cell_runs(snap, ds, "lmm_reg"):
        if r["seed"] in base:
            m = correct_matrix(snap, [base[r["seed"]], r])
            out.append({"seed": r["seed"], **mcnemar(m[1], m[0])})
    return out


def paired_delta(snap: Snapshot, runs_a: list[dict], runs_b: list[dict], params: Params) -> dict | None:
    """Δ = acc(a) − acc(b) over the seeds both have, paired (same seeds, same test images): the two-level
    bootstrap interval of the difference, the minimum effect this design detects at 80 % power (MDE), McNemar on
    the discordant images summed over seeds (exact, two-sided), and the seed-level paired t-test and sign test of
    the per-seed Δ."""
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
    test = mcnemar(ca[:s].reshape(-1), ca[s:].reshape(-1))
    seed_level = seed_tests(list(diff.mean(axis=1) * 100.0))
    return {"delta": boot["mean"], "lo": boot["lo"], "hi": boot["hi"], "se": boot["se"],
            "mde": minimum_detectable_effect(boot["se"]) if np.isfinite(boot["se"]) else float("nan"),
            "p": test["p_value"], "a_only": test["a_only"], "b_only": test["b_only"], "n": s, **seed_level}


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
    return "n/a" if p is None or not np.isfinite(p) else f"{p:.3g}"


def delta_text(d: dict) -> str:
    """A paired Δ in one line: estimate [interval] (seeds), the MDE at 80 % power, and the three tests."""
    return (f"Δ = {d['delta']:+.2f} [{fmt(d['lo'])}, {fmt(d['hi'])}] (n={d['n']}; MDE {fmt(d['mde'])}; McNemar p = "
            f"{pvalue(d['p'])}; seed t-test p = {pvalue(d['t_p'])})")
