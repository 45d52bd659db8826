"""The regime study's section of the report (Markdown) and its files (study/study.csv and one figure per variable)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lmmreg.config import Params
from lmmreg.identity import STUDY_VARIABLES, full_point, study_point
from lmmreg.report.cells import df_text, fmt, pvalue
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
    slice_rows,
    study_slices,
    varying,
)
from lmmreg.report.study_answer import LEVEL, holm_by_point, study_answer


def _context_text(sl: Slice, current: dict[str, str]) -> str:
    current = full_point(current)
    diff = {k: v for k, v in sl.context.items() if current.get(k) != v}
    if not diff:
        return "the current configuration"
    return "the current configuration but " + ", ".join(f"{k} = {v}" for k, v in sorted(diff.items()))


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    dagger = " †" if r.get("unconverged") else ""
    return f"{fmt(r['mean'])} ± {fmt(r['std'])} [{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}] (n={r['n']}){dagger}"


def _point_key(sl: Slice, value: str) -> str:
    return json.dumps(full_point({**sl.context, sl.variable: value}), sort_keys=True)


def _table(sl: Slice, rows: list[dict], methods: list[str], holm: dict[str, float]) -> list[str]:
    out = [f"| {sl.variable} | " + " | ".join(methods) + " | Δ LMM-Reg. − baseline | verdict test p (Holm) | MDE (ν) "
           "| clustered McNemar p | seed t-test p | reg/CE |", "|" + "---|" * (len(methods) + 7)]
    notes = []
    for v in sl.values:
        at = {r["method"]: r for r in rows if r["value"] == v}
        d, lm = at.get("delta"), at.get("lmm_reg")
        dtxt = "-" if d is None else f"{d['mean']:+.2f} [{fmt(d['ci_lo'])}, {fmt(d['ci_hi'])}] (n={d['n']})"
        tests = "- | - | - | -" if d is None else (
            f"{pvalue(d['delta_p'])} ({pvalue(holm.get(_point_key(sl, v), float('nan')))}) | {fmt(d['mde'])} "
            f"({df_text(d['df'])}) | {pvalue(d['mcnemar_p'])} | {pvalue(d['t_p'])}")
        rtxt = "-" if lm is None else f"{fmt(lm['reg_ce_first'], 3)} → {fmt(lm['reg_ce_last'], 3)}"
        out.append(f"| {v} | " + " | ".join(_cell(at.get(m)) for m in methods) + f" | {dtxt} | {tests} | {rtxt} |")
        notes += [f"{r['method']} at {v}, {x}" for r in at.values() for x in r.get("unconverged", [])]
    if notes:
        out += ["", "† Did not converge (under-trained run, cell kept): " + "; ".join(notes) + "."]
    return out


def _validation_lines(params: Params) -> list[str]:
    """Which few-shot validation rule and logit scale the baselines ran with, where params name them."""
    said = [f"{label} `{getattr(params.baselines, key)}`" for key, label in
            (("val_rule", "the baselines' few-shot validation rule (baselines.val_rule)"),
             ("logit_scale", "their logit scale (baselines.logit_scale)")) if hasattr(params.baselines, key)]
    return ["Baselines ran with " + " and ".join(said) + ".", ""] if said else []


TARGET_TITLES = {"lmm": "LMM centroids (Eq. 1, the paper)", "class_prompt": "class-prompt embeddings (no LMM)",
                 "shuffled": "LMM centroids of another class", "random_text": "random-word descriptions",
                 "image_mean": "class mean of the frozen image embeddings (center loss)"}


def target_contributions(snap: Snapshot, params: Params, ds: str, current: dict[str, str]) -> list[str]:
    """"Is it the LMM?": Δ(LMM-Reg. − fine-tuning) for each J_reg target (train.reg_target), per slice of the
    study's target block; nothing where the target never varies."""
    slices = study_slices(snap, ds, "reg_target", current)
    if not slices:
        return []
    holm = holm_by_point(snap, ds, params)
    md = [f"**What the target contributes on {DATASET_TITLES.get(ds, ds)}** (train.reg_target, "
          "lmmreg.reg_targets): LMM-Reg. trained with each target against fine-tuning (α = 0) at the same point; "
          "if a control does as well as the LMM centroids, the LMM's content is not what helps.", ""]
    for sl in slices:
        rows = slice_rows(snap, sl, params)
        md += [f"At {_context_text(sl, current)}:", "",
               "| J_reg target | LMM-Reg. | fine-tuning | Δ LMM-Reg. − fine-tuning | verdict test p (Holm) |",
               "|---|---|---|---|---|"]
        for v in sorted(sl.values, key=lambda v: list(TARGET_TITLES).index(v) if v in TARGET_TITLES else 99):
            at = {r["method"]: r for r in rows if r["value"] == v}
            d = at.get("delta")
            dtxt = "-" if d is None else f"{d['mean']:+.2f} [{fmt(d['ci_lo'])}, {fmt(d['ci_hi'])}] (n={d['n']})"
            ptxt = "-" if d is None else \
                f"{pvalue(d['delta_p'])} ({pvalue(holm.get(_point_key(sl, v), float('nan')))})"
            md.append(f"| {TARGET_TITLES.get(v, v)} | {_cell(at.get('lmm_reg'))} | {_cell(at.get('finetune'))} | "
                      f"{dtxt} | {ptxt} |")
        md.append("")
    return md


def study_markdown(snap: Snapshot, params: Params, classes: dict[str, list[str]]) -> list[str]:
    """The report's regime-study section (markdown lines)."""
    shown = study_point(params)  # as the runs' tags spell it (a default J_reg target left out)
    current = full_point(shown)
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
          f"Verdicts are corrected for multiplicity by Holm's step-down method over each dataset's study points "
          f"(family-wise error {LEVEL:.0%}), on the verdict test's p (Δ against its seed, image and seed × image "
          "variance components; docs/intervals.md); the uncorrected counts stand beside the corrected ones, and a "
          "list of points is the largest |Δ|, selected by Δ.", ""]
    for ds in params.datasets:  # the answer first
        md += [f"**Where LMM-Reg. beats fine-tuning on {DATASET_TITLES.get(ds, ds)}, and where it loses:** "
               f"{study_answer(snap, ds, params)}", ""]
        md += target_contributions(snap, params, ds, current)
    md += [f"Runs of this configuration that differ only in the study variables ({', '.join(STUDY_VARIABLES)}). "
           f"Current point: {', '.join(f'{k} = {v}' for k, v in shown.items())}. A method's runs stand at every "
           "point where its configuration is theirs (a run that incremental training reused unchanged, such as "
           "fine-tuning's at another alpha, counts there too). Cells: mean ± std over seeds "
           f"[{pct}% two-level bootstrap interval: seeds and test images resampled] (n = seeds). Δ = LMM-Reg. − "
           f"baseline (finetune) over paired seeds, [{pct}% paired two-level bootstrap interval: the same seeds and "
           "images drawn for both], the verdict test's p and in brackets its Holm-adjusted p over the dataset's "
           "study points, MDE = the true Δ the verdict test finds with 80 % power (ν its effective degrees of "
           "freedom), the clustered McNemar p (exact sign-flip over images, each image's seeds together), the "
           "seed-level paired t-test p over the seeds' Δ. "
           "reg/CE = α·J_reg / J_ce of LMM-Reg. in its first → last evaluated epoch. Few-shot: K images per class "
           f"drawn per seed from the train split, the full test set, the last epoch. Budget: {budget}.", ""]
    md += _validation_lines(params)
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
                       *_table(sl, rows, methods, holm_by_point(snap, ds, params)), ""]
                if var == "shots" and sl.current:
                    fid = fidelity(rows, len(classes.get(ds, [])))
                    if fid is not None:
                        k = f"≈ {fid['k']:.1f}" if fid["k"] is not None else fid["bound"]
                        md += [f"Fidelity: the linear probe matches zero-shot ({fmt(fid['zero_shot'])}%) at {k} shots "
                               f"per class (the CLIP paper: about {CLIP_PAPER_FIDELITY:g} on average over 27 "
                               "datasets).", ""]
    if not any_var:
        md += ["No study variable varies among the tracked runs yet (`make study` runs the default study).", ""]
    return md


P_COLUMNS = ("delta_p", "holm_p", "mcnemar_p")  # to 4 significant digits, so a small p stays readable


def write_study(snap: Snapshot, params: Params, classes: dict[str, list[str]], out: Path) -> None:
    """`study.csv` (every slice row) and one figure per varying variable (`<variable>.png`, a panel per dataset,
    the slice through the current configuration, or the first slice where none passes through it)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # a variable that stopped varying leaves no stale figure
    current = full_point(study_point(params))
    fields = ("dataset", "variable", "context", "value", "method", "mean", "std", "ci_lo", "ci_hi", "n", "delta_p",
              "holm_p", "test_lo", "test_hi", "df", "mde", "mcnemar_p", "t_p", "sign_p", "reg_ce_first", "reg_ce_last",
              "n_train_images", "train_steps")
    figures: dict[str, list[tuple[str, list[dict], str]]] = {}
    with (out / "study.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for ds in params.datasets:
            holm = holm_by_point(snap, ds, params)
            for var in varying(snap, ds):
                for i, sl in enumerate(study_slices(snap, ds, var, current)):  # the current slice comes first
                    rows = slice_rows(snap, sl, params)
                    if i == 0:
                        figures.setdefault(var, []).append((ds, rows, _context_text(sl, current)))
                    for r in rows:
                        if r["method"] == "delta":
                            r = {**r, "holm_p": holm.get(_point_key(sl, r["value"]), float("nan"))}
                        w.writerow({"dataset": ds, "variable": var, "context": json.dumps(sl.context, sort_keys=True),
                                    **{k: (f"{r[k]:{'.4g' if k in P_COLUMNS else '.4f'}}" if isinstance(r.get(k), float)
                                           else r.get(k, "")) for k in fields[3:]}})
    for var, panels in figures.items():
        plot_variable(var, panels, classes, out / f"{var}.png")
