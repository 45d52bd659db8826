"""The regime study: accuracy against every study variable that varies among the runs of this configuration.

Built from the report's snapshot only (`lmmreg.report.Snapshot`), so `--from-snapshot` rebuilds it without
MLflow. A run's study point is the values of `lmmreg.identity.STUDY_VARIABLES` it was trained with (alpha,
shots, describe noise, n_descriptions, normalize, reg_reduction, head_init, centroids_from); everything else
is the same for all runs of the study. For a variable V, a *slice* is a set of points equal in every
variable but V; each slice gets a table (accuracy per method with its 95% interval and number of seeds,
Δ(lmm_reg − finetune) with a paired bootstrap interval and its tests: docs/intervals.md), and the slice through the
current configuration a figure. The alpha ablation is the slice along alpha; the CoOp-style accuracy-vs-shots figure
is the slice along shots, with the fidelity line (the shots at which the linear probe matches zero-shot).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from lmmreg.config import Params
from lmmreg.identity import STUDY_VARIABLES, full_point, sparse_point
from lmmreg.report.cells import paired_delta, run_stats, unconverged
from lmmreg.report.snapshot import Snapshot

METHOD_ORDER = ("zero_shot", "zero_shot_lmm", "linear_probe", "concat", "finetune", "lmm_reg")
VARIABLE_TITLES = {"alpha": "alpha (the alpha ablation)", "shots": "shots per class", "describe_noise":
                   "description noise (scripted describer)", "n_descriptions": "descriptions per image",
                   "normalize": "normalize", "reg_reduction": "reg_reduction", "head_init": "head initialisation",
                   "centroids_from": "centroids from", "reg_target": "J_reg's target (is it the LMM?)"}
# The CLIP paper (Radford et al. 2021, Fig. 7): a linear probe needs about 4 shots per class on average over
# 27 datasets to match zero-shot CLIP.
CLIP_PAPER_FIDELITY = 4.0


@dataclass
class Slice:
    """Points equal in every study variable but `variable`; `cells[value][method]` = runs (one per seed)."""

    dataset: str
    variable: str
    context: dict[str, str]
    cells: dict[str, dict[str, list[dict]]]
    current: bool  # the slice through the current configuration

    @property
    def values(self) -> list[str]:
        return sorted(self.cells, key=lambda v: value_key(self.variable, v))


def value_key(variable: str, value: str) -> tuple:
    """Numeric order where the values are numbers; shots "all" after every K."""
    if variable == "shots" and value == "all":
        return (0, math.inf, value)
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def study_points(snap: Snapshot, ds: str) -> list[tuple[dict[str, str], dict]]:
    """(full point, run) of every dataset run with a study point; parsed once per snapshot (read, never changed)."""
    key = ("study_points", ds)
    if key not in snap.memo:
        out = []
        for r in snap.runs:
            point = json.loads(r.get("point") or "{}")
            if r["dataset"] == ds and point:
                out.append((full_point(point), r))
        snap.memo[key] = out
    return snap.memo[key]


def varying(snap: Snapshot, ds: str) -> list[str]:
    """Study variables with more than one value among the dataset's runs, in STUDY_VARIABLES order."""
    seen: dict[str, set[str]] = {}
    for point, _ in study_points(snap, ds):
        for k, v in point.items():
            seen.setdefault(k, set()).add(v)
    return [v for v in STUDY_VARIABLES if len(seen.get(v, ())) > 1]


def study_slices(snap: Snapshot, ds: str, variable: str, current: dict[str, str]) -> list[Slice]:
    """Every slice along `variable` with at least two values; the one through `current` first."""
    groups: dict[tuple, dict[str, dict[str, list[dict]]]] = {}
    for point, r in study_points(snap, ds):
        if variable not in point:
            continue
        ctx = tuple(sorted((k, v) for k, v in point.items() if k != variable))
        groups.setdefault(ctx, {}).setdefault(point[variable], {}).setdefault(r["method"], []).append(r)
    here = tuple(sorted((k, v) for k, v in full_point(current).items() if k != variable))
    out = [Slice(ds, variable, sparse_point(dict(ctx)),
                 {v: {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in by_m.items()} for v, by_m in cells.items()},
                 ctx == here)
           for ctx, cells in groups.items() if len(cells) >= 2]
    return sorted(out, key=lambda s: (not s.current, sorted(s.context.items())))


def methods_of(slices: list[Slice]) -> list[str]:
    found = {m for s in slices for by_m in s.cells.values() for m in by_m}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def mean_of(runs: list[dict], key: str) -> float:
    vals = [r[key] for r in runs if np.isfinite(r.get(key, float("nan")))]
    return float(np.mean(vals)) if vals else float("nan")


def slice_rows(snap: Snapshot, sl: Slice, params: Params) -> list[dict]:
    """One row per (value, method) plus a Δ row per value; plain dicts for the tables, the CSV and the figure."""
    rows = []
    for v in sl.values:
        by_m = sl.cells[v]
        for m in methods_of([sl]):
            st = run_stats(snap, by_m.get(m, []), params)
            if st is not None:
                rows.append({"value": v, "method": m, "mean": st["mean"], "std": st["std"], "ci_lo": st["ci_lo"],
                             "ci_hi": st["ci_hi"], "n": st["n"],
                             "reg_ce_first": mean_of(st["runs"], "reg_ce_ratio_first"),
                             "reg_ce_last": mean_of(st["runs"], "reg_ce_ratio_last"),
                             "n_train_images": mean_of(st["runs"], "n_train_images"),
                             "train_steps": mean_of(st["runs"], "train_steps"), "unconverged": unconverged(st["runs"])})
        d = paired_delta(snap, by_m.get("lmm_reg", []), by_m.get("finetune", []), params)
        if d is not None:
            rows.append({"value": v, "method": "delta", "mean": d["delta"], "ci_lo": d["lo"], "ci_hi": d["hi"],
                         "n": d["n"], "delta_p": d["delta_p"], "test_lo": d["test_lo"], "test_hi": d["test_hi"],
                         "df": d["df"], "mde": d["mde"], "mcnemar_p": d["mcnemar_p"], "t_p": d["t_p"],
                         "sign_p": d["sign_p"]})
    return rows


def fidelity(rows: list[dict], n_classes: int) -> dict | None:
    """Shots per class at which the linear probe's mean accuracy reaches zero-shot's (log-linear interpolation
    between the measured K; "all" counts as the mean images per class of the full split)."""
    zs = [r["mean"] for r in rows if r["method"] == "zero_shot"]
    lp = sorted((shots_x(r, n_classes), r["mean"]) for r in rows if r["method"] == "linear_probe")
    if not zs or len(lp) < 1:
        return None
    target = float(np.mean(zs))
    out = {"zero_shot": target, "k": None, "bound": None}
    for i, (k, acc) in enumerate(lp):
        if acc >= target:
            if i == 0:
                out["bound"] = f"<= {k:g}"
            else:
                (k0, a0) = lp[i - 1]
                t = (target - a0) / (acc - a0) if acc > a0 else 1.0
                out["k"] = float(2 ** (math.log2(k0) + t * (math.log2(k) - math.log2(k0))))
            return out
    out["bound"] = f"> {lp[-1][0]:g}"
    return out


def shots_x(row: dict, n_classes: int) -> float:
    """x position of a shots value: K, or for "all" the mean training images per class."""
    if row["value"] != "all":
        return float(row["value"])
    return row["n_train_images"] / n_classes if n_classes and np.isfinite(row["n_train_images"]) else math.nan



def methods_of_rows(rows: list[dict]) -> list[str]:
    found = {r["method"] for r in rows if r["method"] != "delta"}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))
