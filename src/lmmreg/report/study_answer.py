"""The regime study's answer: over every study point, where LMM-Reg. beats fine-tuning and where it loses."""

from __future__ import annotations

import json
import math

from lmmreg.config import Params
from lmmreg.identity import study_point
from lmmreg.report.cells import delta_text, paired_delta
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study import study_points

SHOWN = 5  # points listed per verdict; the rest are counted


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


def study_answer(snap: Snapshot, ds: str, params: Params) -> str:
    """Where LMM-Reg. beats the baseline (interval above 0) and where it loses (below 0), with Δ, interval, MDE
    and p; with a single point, that point's verdict once."""
    current = study_point(params)
    pts = all_points(snap, ds, params)
    pct = int(round(params.report.ci * 100))
    if not pts:
        return "no study point has both lmm_reg and finetune runs."

    def txt(p: dict[str, str], d: dict) -> str:
        return f"{delta_text(d)} at {point_name(p, current)}"

    helps = sorted(((p, d) for p, d in pts if d["lo"] > 0), key=lambda t: -t[1]["delta"])
    hurts = sorted(((p, d) for p, d in pts if d["hi"] < 0), key=lambda t: t[1]["delta"])
    if len(pts) == 1:
        (p, d), = pts
        unseen = f"; the design cannot see a true Δ below {d['mde']:.2f} points" if math.isfinite(d["mde"]) else ""
        verdict = ("beats the baseline" if helps else "loses to the baseline" if hurts else
                   f"is indistinguishable from the baseline ({pct}% interval spans 0{unseen})")
        return f"one study point so far: LMM-Reg. {verdict}, {txt(p, d)}."
    same = [(p, d) for p, d in pts if not d["lo"] > 0 and not d["hi"] < 0]
    parts = [f"over {len(pts)} study points, LMM-Reg. beats the baseline ({pct}% interval above 0) at {len(helps)}, "
             f"loses (interval below 0) at {len(hurts)}, and is indistinguishable at {len(same)}."]
    for label, group in (("Beats", helps), ("Loses", hurts)):
        if group:
            more = f" (and {len(group) - SHOWN} more in study/study.csv)" if len(group) > SHOWN else ""
            parts.append(f"{label}: " + "; ".join(txt(p, d) for p, d in group[:SHOWN]) + more + ".")
    if same:
        under = sum(1 for _, d in same if abs(d["delta"]) < d["mde"])
        parts.append(f"Of the {len(same)} indistinguishable points, {under} have |Δ| below their MDE (too small a "
                     "test to see an effect of that size).")
        if not helps:
            parts.append(f"Highest Δ: {txt(*max(same, key=lambda t: t[1]['delta']))}.")
        if not hurts:
            parts.append(f"Lowest Δ: {txt(*min(same, key=lambda t: t[1]['delta']))}.")
    return " ".join(parts)
