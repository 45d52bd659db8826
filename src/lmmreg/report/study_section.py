"""The regime study's section of the report (Markdown) and its files (study/study.csv and one figure per variable)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lmmreg.config import Params
from lmmreg.identity import STUDY_VARIABLES, study_point
from lmmreg.report.cells import fmt
from lmmreg.report.figures import plot_variable
from lmmreg.report.paper import DATASET_TITLES
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study import (
    CLIP_PAPER_FIDELITY,
    VARIABLE_TITLES,
    Slice,
    fidelity,
    mean_of,
    methods_of,
    paired_delta,
    slice_rows,
    study_points,
    study_slices,
    varying,
)


def _context_text(sl: Slice, current: dict[str, str]) -> str:
    diff = {k: v for k, v in sl.context.items() if current.get(k) != v}
    if not diff:
        return "the current configuration"
    return "the current configuration but " + ", ".join(f"{k} = {v}" for k, v in sorted(diff.items()))


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{fmt(r['mean'])} ± {fmt(r['std'])} [{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}] (n={r['n']})"


def _all_points(snap: Snapshot, ds: str, params: Params) -> list[tuple[dict[str, str], dict]]:
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


def closing_note(snap: Snapshot, ds: str, params: Params) -> str:
    """Where LMM-Reg. helps and where it hurts, over every study point, in numbers."""
    current = study_point(params)
    pts = _all_points(snap, ds, params)
    if not pts:
        return "no point has both lmm_reg and finetune runs."

    def name(p: dict[str, str]) -> str:
        diff = {k: v for k, v in p.items() if current.get(k) != v}
        return "the current configuration" if not diff else ", ".join(f"{k} = {v}" for k, v in sorted(diff.items()))

    def txt(p: dict[str, str], d: dict) -> str:
        return f"Δ = {d['delta']:+.2f} [{fmt(d['lo'])}, {fmt(d['hi'])}] (n={d['n']}, p = {d['p']:.3g}) at {name(p)}"

    helps = sorted(((p, d) for p, d in pts if d["lo"] > 0), key=lambda t: -t[1]["delta"])
    hurts = sorted(((p, d) for p, d in pts if d["hi"] < 0), key=lambda t: t[1]["delta"])
    pct = int(round(params.report.ci * 100))
    same = len(pts) - len(helps) - len(hurts)
    parts = [f"over {len(pts)} study points, LMM-Reg. beats the baseline ({pct}% interval above 0) at {len(helps)}, "
             f"loses (interval below 0) at {len(hurts)}, and is indistinguishable at {same}."]
    if helps:
        parts.append(f"Largest gain: {txt(*helps[0])}.")
    if hurts:
        parts.append(f"Largest loss: {txt(*hurts[0])}.")
    best = max(pts, key=lambda t: t[1]["delta"])
    worst = min(pts, key=lambda t: t[1]["delta"])
    if not helps:
        parts.append(f"Highest Δ: {txt(*best)}.")
    if not hurts:
        parts.append(f"Lowest Δ: {txt(*worst)}.")
    return " ".join(parts)


def _table(sl: Slice, rows: list[dict], methods: list[str]) -> list[str]:
    out = [f"| {sl.variable} | " + " | ".join(methods) + " | Δ LMM-Reg. − baseline | McNemar p | reg/CE |",
           "|" + "---|" * (len(methods) + 4)]
    for v in sl.values:
        at = {r["method"]: r for r in rows if r["value"] == v}
        d, lm = at.get("delta"), at.get("lmm_reg")
        dtxt = "-" if d is None else f"{d['mean']:+.2f} [{fmt(d['ci_lo'])}, {fmt(d['ci_hi'])}] (n={d['n']})"
        ptxt = "-" if d is None else f"{d['p']:.3g}"
        rtxt = "-" if lm is None else f"{fmt(lm['reg_ce_first'], 3)} → {fmt(lm['reg_ce_last'], 3)}"
        out.append(f"| {v} | " + " | ".join(_cell(at.get(m)) for m in methods) + f" | {dtxt} | {ptxt} | {rtxt} |")
    return out


def study_markdown(snap: Snapshot, params: Params, classes: dict[str, list[str]]) -> list[str]:
    """The report's regime-study section (markdown lines)."""
    current = study_point(params)
    pct = int(round(params.report.ci * 100))
    t = params.train
    if t.budget == "steps":
        steps = f"train.steps = {t.steps}" if t.steps else f"those of the full-data run at train.epochs = {t.epochs}"
        budget = (f"train.budget = steps: every run makes the same number of optimiser steps whatever its shots "
                  f"({steps}; the train_steps column of study/study.csv), so small K is not under-trained; test "
                  f"accuracy is evaluated about {t.epochs} times per run")
    else:
        budget = (f"train.budget = epochs: every run makes {t.epochs} passes over its own training set, so K-shot "
                  "runs make far fewer optimiser steps than full-data runs")
    md = ["## Regime study: accuracy against each varying study variable", "",
          f"Runs of this configuration that differ only in the study variables ({', '.join(STUDY_VARIABLES)}). "
          f"Current point: {', '.join(f'{k} = {v}' for k, v in current.items())}. Cells: mean ± std over seeds "
          f"[{pct}% bootstrap interval over test images] (n = seeds). Δ = LMM-Reg. − baseline (finetune) over "
          f"paired seeds, [{pct}% paired bootstrap interval], McNemar p on the discordant images summed over seeds. "
          "reg/CE = α·J_reg / J_ce of LMM-Reg. in its first → last evaluated epoch. Few-shot: K images per class "
          f"drawn per seed from the train split, the full test set, the last epoch. Budget: {budget}.", ""]
    md += ["Regulariser weight in the current configuration, α·J_reg / J_ce (mean over seeds):", "",
           "| Dataset | method | first epoch | last epoch |", "|---|---|---|---|"]
    for ds in params.datasets:
        for m in ("finetune", "lmm_reg"):
            runs = [r for r in snap.runs if r["role"] == "current" and r["dataset"] == ds and r["method"] == m]
            if runs:
                md.append(f"| {DATASET_TITLES.get(ds, ds)} | {m} | {fmt(mean_of(runs, 'reg_ce_ratio_first'), 3)} | "
                          f"{fmt(mean_of(runs, 'reg_ce_ratio_last'), 3)} |")
    md.append("")
    any_var = False
    for ds in params.datasets:
        title = DATASET_TITLES.get(ds, ds)
        for var in varying(snap, ds):
            slices = study_slices(snap, ds, var, current)
            if not slices:
                continue
            any_var = True
            methods = methods_of(slices)
            for sl in slices:
                rows = slice_rows(snap, sl, params)
                md += [f"### {title}: {VARIABLE_TITLES.get(var, var)}, at {_context_text(sl, current)}", "",
                       *_table(sl, rows, methods), ""]
                if var == "shots" and sl.current:
                    fid = fidelity(rows, len(classes.get(ds, [])))
                    if fid is not None:
                        k = f"≈ {fid['k']:.1f}" if fid["k"] is not None else fid["bound"]
                        md += [f"Fidelity: the linear probe matches zero-shot ({fmt(fid['zero_shot'])}%) at {k} shots "
                               f"per class (the CLIP paper: about {CLIP_PAPER_FIDELITY:g} on average over 27 "
                               "datasets).", ""]
        md += [f"**Where LMM-Reg. helps on {title}:** {closing_note(snap, ds, params)}", ""]
    if not any_var:
        md += ["No study variable varies among the tracked runs yet (`make study` runs the default study).", ""]
    return md


def write_study(snap: Snapshot, params: Params, classes: dict[str, list[str]], out: Path) -> None:
    """`study.csv` (every slice row) and one figure per varying variable (`<variable>.png`, a panel per dataset,
    the slice through the current configuration, or the first slice where none passes through it)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # a variable that stopped varying leaves no stale figure
    current = study_point(params)
    fields = ("dataset", "variable", "context", "value", "method", "mean", "std", "ci_lo", "ci_hi", "n", "p",
              "reg_ce_first", "reg_ce_last", "n_train_images", "train_steps")
    figures: dict[str, list[tuple[str, list[dict], str]]] = {}
    with (out / "study.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for ds in params.datasets:
            for var in varying(snap, ds):
                for i, sl in enumerate(study_slices(snap, ds, var, current)):  # the current slice comes first
                    rows = slice_rows(snap, sl, params)
                    if i == 0:
                        figures.setdefault(var, []).append((ds, rows, _context_text(sl, current)))
                    for r in rows:
                        w.writerow({"dataset": ds, "variable": var, "context": json.dumps(sl.context, sort_keys=True),
                                    **{k: (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r.get(k, ""))
                                       for k in fields[3:]}})
    for var, panels in figures.items():
        plot_variable(var, panels, classes, out / f"{var}.png")
