"""The regime study's answer: over every study point, where LMM-Reg. beats fine-tuning and where it loses, the
verdicts corrected for multiplicity by Holm's method over the dataset's study points (docs/intervals.md)."""

from __future__ import annotations

import json
import math

from lmmreg.config import Params
from lmmreg.identity import full_point, study_point
from lmmreg.report.cells import delta_text, paired_delta, pvalue
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study import study_points
from lmmreg.stats import holm

SHOWN = 5  # points listed per verdict, the largest |Δ| first; the rest are counted
LEVEL = 0.05  # the verdicts' level: family-wise over a dataset's study points after Holm, per point before


def all_points(snap: Snapshot, ds: str, params: Params) -> list[tuple[dict[str, str], dict]]:
    """Every study point of the dataset with its Δ(lmm_reg − finetune), each point once."""
    by_point: dict[str, dict[str, list[dict]]] = {}
    for point, r in study_points(snap, ds):
        by_point.setdefault(json.dumps(point, sort_keys=True), {}).setdefault(r["method"], []).append(r)
    out = []
    for key, by_m in sorted(by_point.items()):
        d = paired_delta(snap, sorted(by_m.get("lmm_reg", []), key=lambda r: r["seed"]),
                         sorted(by_m.get("finetune", []), key=lambda r: r["seed"]), params)
        if d is not None:
            out.append((json.loads(key), d))
    return out


def point_name(point: dict[str, str], current: dict[str, str]) -> str:
    diff = {k: v for k, v in point.items() if current.get(k) != v}
    return "the current configuration" if not diff else ", ".join(f"{k} = {v}" for k, v in sorted(diff.items()))


def holm_by_point(snap: Snapshot, ds: str, params: Params) -> dict[str, float]:
    """Each study point's Holm-adjusted verdict p (keyed by the point's JSON), the family being all the dataset's
    points. Computed once per snapshot and dataset (every table of the study section asks)."""
    key = ("holm_by_point", ds)
    if key not in snap.memo:
        pts = all_points(snap, ds, params)
        snap.memo[key] = {json.dumps(p, sort_keys=True): q
                          for (p, _), q in zip(pts, holm([d["delta_p"] for _, d in pts]), strict=True)}
    return snap.memo[key]


def _called(pts: list[tuple[dict, dict]], ps: list[float]) -> tuple[list[int], list[int]]:
    """Indices of the points called (p < LEVEL) beating and losing to the baseline, the largest |Δ| first."""
    called = [i for i, q in enumerate(ps) if math.isfinite(q) and q < LEVEL]
    helps = sorted((i for i in called if pts[i][1]["delta"] > 0), key=lambda i: -pts[i][1]["delta"])
    hurts = sorted((i for i in called if pts[i][1]["delta"] < 0), key=lambda i: pts[i][1]["delta"])
    return helps, hurts


def study_answer(snap: Snapshot, ds: str, params: Params) -> str:
    """Where LMM-Reg. beats the baseline and where it loses: the verdict test (`lmmreg.stats.components_test`)
    at 5 %, family-wise over the dataset's study points by Holm's step-down method, with the uncorrected counts
    beside; each listed point with Δ, bootstrap interval, verdict p, MDE and the other tests. With a single point,
    that point's verdict once (a family of one needs no correction)."""
    current = full_point(study_point(params))
    pts = all_points(snap, ds, params)
    if not pts:
        return "no study point has both lmm_reg and finetune runs."
    raw = [d["delta_p"] for _, d in pts]
    adjusted = holm(raw)

    def txt(i: int, holm_p: bool = True) -> str:
        p, d = pts[i]
        return f"{delta_text(d)}{f', Holm p = {pvalue(adjusted[i])}' if holm_p else ''} at {point_name(p, current)}"

    if len(pts) == 1:
        d = pts[0][1]
        mde = (f"; a true Δ of {d['mde']:.2f} points would be found with 80 % power" if math.isfinite(d["mde"])
               else "")
        helps, hurts = _called(pts, raw)
        verdict = ("beats the baseline" if helps else "loses to the baseline" if hurts else
                   f"is indistinguishable from the baseline (verdict test p ≥ {LEVEL:g}{mde})")
        return f"one study point so far: LMM-Reg. {verdict}, {txt(0, holm_p=False)}."
    helps, hurts = _called(pts, adjusted)
    helps_u, hurts_u = _called(pts, raw)
    m = len(pts)
    parts = [f"over {m} study points, Holm-corrected (family-wise error {LEVEL:.0%} over the {m}), LMM-Reg. beats "
             f"the baseline at {len(helps)}, loses at {len(hurts)} and is indistinguishable at "
             f"{m - len(helps) - len(hurts)}; uncorrected (each point at p < {LEVEL:g}): beats at {len(helps_u)}, "
             f"loses at {len(hurts_u)}, indistinguishable at {m - len(helps_u) - len(hurts_u)}."]

    shown: list[int] = []

    def listed(label: str, group: list[int]) -> str:
        shown.extend(group[:SHOWN])
        which = (f"the {SHOWN} of {len(group)} with the largest |Δ|, selected by Δ; the rest in study/study.csv"
                 if len(group) > SHOWN else f"all {len(group)}, largest |Δ| first")
        return f"{label} ({which}): " + "; ".join(txt(i) for i in group[:SHOWN]) + "."

    if helps:
        parts.append(listed("Beats after correction", helps))
    if hurts:
        parts.append(listed("Loses after correction", hurts))
    only = sorted(set(helps_u + hurts_u) - set(helps + hurts), key=lambda i: -abs(pts[i][1]["delta"]))
    if only:
        parts.append(listed("Called only without the correction", only))
    rest = [i for i in range(m) if i not in shown]
    if rest and not any(pts[i][1]["delta"] > 0 for i in shown):
        parts.append(f"Highest Δ (selected by Δ): {txt(max(rest, key=lambda i: pts[i][1]['delta']))}.")
    if rest and not any(pts[i][1]["delta"] < 0 for i in shown):
        parts.append(f"Lowest Δ (selected by Δ): {txt(min(rest, key=lambda i: pts[i][1]['delta']))}.")
    return " ".join(parts)
