"""The regime study: accuracy against every study variable that varies among the runs of this configuration.

Built from the report's snapshot only (`lmmreg.report.Snapshot`), so `--from-snapshot` rebuilds it without
MLflow. A run's study point is the values of `lmmreg.identity.STUDY_VARIABLES` it was trained with (alpha,
shots, describe noise, n_descriptions, normalize, reg_reduction, head_init, centroids_from); everything else
is the same for all runs of the study. For a variable V, a *slice* is a set of points equal in every
variable but V; each slice gets a table (accuracy per method with its 95% interval and number of seeds,
Δ(lmm_reg − finetune) with a paired bootstrap interval and McNemar's p), and the slice through the current
configuration a figure. The alpha ablation is the slice along alpha; the CoOp-style accuracy-vs-shots figure
is the slice along shots, with the fidelity line (the shots at which the linear probe matches zero-shot).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmmreg.config import Params
from lmmreg.identity import STUDY_VARIABLES, study_point
from lmmreg.report import DATASET_TITLES, Snapshot, _correct_matrix, _fmt, run_stats
from lmmreg.stats import mcnemar, paired_bootstrap_delta

log = logging.getLogger(__name__)

METHOD_ORDER = ("zero_shot", "zero_shot_lmm", "linear_probe", "concat", "finetune", "lmm_reg")
VARIABLE_TITLES = {"alpha": "alpha (the alpha ablation)", "shots": "shots per class", "describe_noise":
                   "description noise (scripted describer)", "n_descriptions": "descriptions per image",
                   "normalize": "normalize", "reg_reduction": "reg_reduction", "head_init": "head initialisation",
                   "centroids_from": "centroids from"}
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


def _points(snap: Snapshot, ds: str) -> list[tuple[dict[str, str], dict]]:
    out = []
    for r in snap.runs:
        point = json.loads(r.get("point") or "{}")
        if r["dataset"] == ds and point:
            out.append((point, r))
    return out


def varying(snap: Snapshot, ds: str) -> list[str]:
    """Study variables with more than one value among the dataset's runs, in STUDY_VARIABLES order."""
    seen: dict[str, set[str]] = {}
    for point, _ in _points(snap, ds):
        for k, v in point.items():
            seen.setdefault(k, set()).add(v)
    return [v for v in STUDY_VARIABLES if len(seen.get(v, ())) > 1]


def study_slices(snap: Snapshot, ds: str, variable: str, current: dict[str, str]) -> list[Slice]:
    """Every slice along `variable` with at least two values; the one through `current` first."""
    groups: dict[tuple, dict[str, dict[str, list[dict]]]] = {}
    for point, r in _points(snap, ds):
        if variable not in point:
            continue
        ctx = tuple(sorted((k, v) for k, v in point.items() if k != variable))
        groups.setdefault(ctx, {}).setdefault(point[variable], {}).setdefault(r["method"], []).append(r)
    here = tuple(sorted((k, v) for k, v in current.items() if k != variable))
    out = [Slice(ds, variable, dict(ctx), {v: {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in by_m.items()}
                                           for v, by_m in cells.items()}, ctx == here)
           for ctx, cells in groups.items() if len(cells) >= 2]
    return sorted(out, key=lambda s: (not s.current, sorted(s.context.items())))


def methods_of(slices: list[Slice]) -> list[str]:
    found = {m for s in slices for by_m in s.cells.values() for m in by_m}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def paired_delta(snap: Snapshot, runs_a: list[dict], runs_b: list[dict], params: Params) -> dict | None:
    """Δ = acc(a) − acc(b) over the seeds both have: paired bootstrap interval, McNemar on the discordant
    pairs summed over seeds (exact, two-sided)."""
    b_by_seed = {r["seed"]: r for r in runs_b}
    pairs = [(r, b_by_seed[r["seed"]]) for r in runs_a if r["seed"] in b_by_seed]
    if not pairs:
        return None
    ca = _correct_matrix(snap, [a for a, _ in pairs] + [b for _, b in pairs])  # [2S, N]: a rows, then b rows
    s = len(pairs)
    delta, lo, hi = paired_bootstrap_delta(ca[:s], ca[s:], n_boot=params.report.bootstrap, ci=params.report.ci)
    test = mcnemar(ca[:s].reshape(-1), ca[s:].reshape(-1))
    return {"delta": delta, "lo": lo, "hi": hi, "p": test["p_value"], "n": s}


def _mean(runs: list[dict], key: str) -> float:
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
                             "reg_ce_first": _mean(st["runs"], "reg_ce_ratio_first"),
                             "reg_ce_last": _mean(st["runs"], "reg_ce_ratio_last"),
                             "n_train_images": _mean(st["runs"], "n_train_images"),
                             "train_steps": _mean(st["runs"], "train_steps")})
        d = paired_delta(snap, by_m.get("lmm_reg", []), by_m.get("finetune", []), params)
        if d is not None:
            rows.append({"value": v, "method": "delta", "mean": d["delta"], "ci_lo": d["lo"], "ci_hi": d["hi"],
                         "n": d["n"], "p": d["p"]})
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


def _context_text(sl: Slice, current: dict[str, str]) -> str:
    diff = {k: v for k, v in sl.context.items() if current.get(k) != v}
    if not diff:
        return "the current configuration"
    return "the current configuration but " + ", ".join(f"{k} = {v}" for k, v in sorted(diff.items()))


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{_fmt(r['mean'])} ± {_fmt(r['std'])} [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}] (n={r['n']})"


def _all_points(snap: Snapshot, ds: str, params: Params) -> list[tuple[dict[str, str], dict]]:
    """Every study point of the dataset with its Δ(lmm_reg − finetune), each point once."""
    by_point: dict[str, dict[str, list[dict]]] = {}
    for point, r in _points(snap, ds):
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
        return f"Δ = {d['delta']:+.2f} [{_fmt(d['lo'])}, {_fmt(d['hi'])}] (n={d['n']}, p = {d['p']:.3g}) at {name(p)}"

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
        dtxt = "-" if d is None else f"{d['mean']:+.2f} [{_fmt(d['ci_lo'])}, {_fmt(d['ci_hi'])}] (n={d['n']})"
        ptxt = "-" if d is None else f"{d['p']:.3g}"
        rtxt = "-" if lm is None else f"{_fmt(lm['reg_ce_first'], 3)} → {_fmt(lm['reg_ce_last'], 3)}"
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
                md.append(f"| {DATASET_TITLES.get(ds, ds)} | {m} | {_fmt(_mean(runs, 'reg_ce_ratio_first'), 3)} | "
                          f"{_fmt(_mean(runs, 'reg_ce_ratio_last'), 3)} |")
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
                        md += [f"Fidelity: the linear probe matches zero-shot ({_fmt(fid['zero_shot'])}%) at {k} shots "
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


def plot_variable(var: str, panels: list[tuple[str, list[dict], str]], classes: dict[str, list[str]],
                  path: Path) -> None:
    """Accuracy per method against `var`, error bars = the bootstrap interval; shots and alpha on a log axis
    (CoOp's accuracy-vs-shots figure for shots, with zero-shot dashed and the fidelity point dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (ds, rows, where) in zip(axes[0], panels, strict=True):
        values = sorted({r["value"] for r in rows}, key=lambda v: value_key(var, v))
        n_classes = len(classes.get(ds, []))
        numeric = all(value_key(var, v)[0] == 0 for v in values)
        if var == "shots":
            xs = {v: shots_x(next(r for r in rows if r["value"] == v), n_classes) for v in values}
        elif numeric:
            xs = {v: float(v) for v in values}
        else:
            xs = {v: float(i) for i, v in enumerate(values)}
        positive = numeric and all(x > 0 for x in xs.values() if np.isfinite(x))
        for m in methods_of_rows(rows):
            pts = [(xs[r["value"]], r) for r in rows if r["method"] == m and np.isfinite(xs[r["value"]])]
            if not pts:
                continue
            x = np.array([p for p, _ in pts])
            mean = np.array([r["mean"] for _, r in pts])
            err = np.array([[r["mean"] - r["ci_lo"], r["ci_hi"] - r["mean"]] for _, r in pts]).T
            err = np.where(np.isfinite(err), err, 0.0)
            n = sorted({r["n"] for _, r in pts})
            style = {"linestyle": "--"} if m == "zero_shot" else {}
            ax.errorbar(x, mean, yerr=err, marker="o", markersize=3, capsize=2,
                        label=f"{m} (n={'/'.join(map(str, n))})", **style)
        if var == "shots":
            fid = fidelity(rows, n_classes)
            if fid is not None and fid["k"] is not None:
                ax.axvline(fid["k"], linestyle=":", color="grey", linewidth=1)
        if positive and var in ("shots", "alpha"):
            ax.set_xscale("log", base=2 if var == "shots" else 10)
        ax.set_xticks([xs[v] for v in values if np.isfinite(xs[v])])
        ax.set_xticklabels([(f"all ({xs[v]:.0f})" if v == "all" else v) for v in values if np.isfinite(xs[v])],
                           fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel(VARIABLE_TITLES.get(var, var))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{DATASET_TITLES.get(ds, ds)}, at {where}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def methods_of_rows(rows: list[dict]) -> list[str]:
    found = {r["method"] for r in rows if r["method"] != "delta"}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))
