"""The report's figures: Fig. 2 (test accuracy per epoch) and the regime study's accuracy against a variable."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from lmmreg.config import Params
from lmmreg.report.catalog import BOLD, METHOD_TITLES, PAPER_ROWS, method_style, style_order
from lmmreg.report.cells import cell_runs
from lmmreg.report.paper import DATASET_TITLES
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study import VARIABLE_TITLES, fidelity, methods_of_rows, shots_x, value_key

# Fig. 2's right panel: the last part of each method's own training (its last evaluated epoch = 100 %), at a y-range
# around where LMM-Reg. and its baseline end, holding every method that ends within ZOOM_WITHIN points of them: there
# the methods differ by a few points, a tenth of the left panel's height.
ZOOM_FROM = 60.0  # % of training
ZOOM_WITHIN = 10.0  # points of test accuracy


def _mean_curves(snap: Snapshot, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """method -> (evaluated epochs [E], test accuracy [S, E] over its seeds, S) for the current configuration."""
    found = {r["method"] for r in snap.runs if r["role"] == "current" and r["dataset"] == dataset}
    curves_of = {}
    for m in style_order(found):  # drawing order: the bold pair last, on top
        runs = cell_runs(snap, dataset, m)
        curves = [np.array([a for _, a in snap.histories.get(r["run_id"], [])]) for r in runs]
        if curves and len({len(c) for c in curves}) == 1 and len(curves[0]):
            x = np.array([e for e, _ in snap.histories[runs[0]["run_id"]]])  # evaluated epochs
            curves_of[m] = (x, np.stack(curves), len(runs))
    return curves_of


def _zoom_limits(curves_of: dict) -> tuple[tuple[float, float], list[str]]:
    """The right panel's y-range, and the methods left off it (ending more than ZOOM_WITHIN points away from where
    LMM-Reg. and its baseline end; from the best method where neither ran)."""
    final = {m: float(c.mean(0)[-1]) for m, (_, c, _) in curves_of.items()}
    anchor = [final[m] for m in BOLD if m in final] or [max(final.values())]
    shown = [m for m, f in final.items() if min(anchor) - ZOOM_WITHIN <= f <= max(anchor) + ZOOM_WITHIN]
    late = [float(v) for m in shown for v in _late(*curves_of[m][:2])[1]]
    lo, hi = min(final[m] for m in shown), max(late)
    pad = max(0.5, 0.12 * (hi - lo))
    return (lo - pad, hi + pad), [m for m in final if m not in shown]


def _late(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(% of training, mean accuracy) from the evaluation just before ZOOM_FROM on; a method evaluated once is flat."""
    mean = c.mean(0)
    if len(x) == 1:
        return np.array([ZOOM_FROM, 100.0]), np.repeat(mean, 2)
    share = 100.0 * x / x[-1]
    first = max(0, int(np.searchsorted(share, ZOOM_FROM)) - 1)
    return share[first:], mean[first:]


def plot_fig2(snap: Snapshot, params: Params, out_png: Path, out_svg: Path) -> None:
    """Test accuracy per epoch of every method, one row per dataset: on the left the whole training, the mean curve
    over seeds with a band of ± std for LMM-Reg. and its baseline (bold), a method evaluated once (zero-shot, GDA ...)
    a flat line; on the right the last 40 % of each method's own training at a y-range that separates the methods.
    The legend sits below, in two columns: the paper's rows, then the field's baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "lmmreg"  # deterministic SVG ids
    dss = params.datasets
    fig, axes = plt.subplots(len(dss), 2, figsize=(9.0, 3.4 * len(dss)), squeeze=False)
    lines: dict[str, tuple] = {}  # method -> (a line of it, its legend label)
    for (ax, zoom), d in zip(axes, dss, strict=True):
        curves_of = _mean_curves(snap, d)
        span = [min(x[0] for x, _, _ in curves_of.values()), max(x[-1] for x, _, _ in curves_of.values())] \
            if curves_of else [0, 1]
        ylim, off = _zoom_limits(curves_of) if curves_of else (None, [])
        for m, (x, c, n) in curves_of.items():
            st = method_style(m)
            xs, mean = (np.array(span), np.repeat(c.mean(0), 2)) if len(x) == 1 else (x, c.mean(0))
            (line,) = ax.plot(xs, mean, markevery=max(1, len(xs) // 8), **st)
            lines.setdefault(m, (line, f"{METHOD_TITLES.get(m, m)} (n={n})"))
            share, late = _late(x, c)
            if m not in off:
                zoom.plot(share, late, markevery=max(1, len(share) // 6), **st)
            if m in BOLD and len(x) > 1:
                lo, hi = c.mean(0) - c.std(0), c.mean(0) + c.std(0)
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, linewidth=0)
                k = len(x) - len(share)
                zoom.fill_between(share, lo[k:], hi[k:], color=st["color"], alpha=0.15, linewidth=0)
        demo = params.source(d).layout == "demo"
        title = "Synthetic demo data (not the paper's)" if demo else DATASET_TITLES.get(d, d)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        zoom.set_title(f"the last {100 - ZOOM_FROM:.0f} % of training, zoomed in", fontsize=9)
        zoom.set_xlabel("share of each method's own training (%)")
        zoom.set_xlim(ZOOM_FROM - 1, 101)
        if ylim is not None:
            zoom.set_ylim(*ylim)
            if off:
                note = textwrap.fill(f"off this scale (ending > {ZOOM_WITHIN:.0f} points from LMM-Reg. and its "
                                     f"baseline): {', '.join(off)}", 62)
                zoom.text(0.02, 0.02, note, transform=zoom.transAxes, fontsize=6.5, color="dimgrey",
                          bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
        for a in (ax, zoom):
            a.grid(alpha=0.3)
            a.tick_params(labelsize=8)
    fig.tight_layout()  # before the legends, which sit below the panels (the saved bbox grows to hold them)
    paper = [m for m in PAPER_ROWS if m in lines]
    others = [m for m in lines if m not in PAPER_ROWS]
    for x0, title, methods in ((0.0, "The paper's rows", paper), (0.5, "The field's baselines (re-run here)", others)):
        if methods:
            fig.legend([lines[m][0] for m in methods], [lines[m][1] for m in methods], title=title, fontsize=8,
                       title_fontsize=8.5, loc="upper left", bbox_to_anchor=(x0, 0.0), frameon=False,
                       alignment="left")
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    fig.savefig(out_svg, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)


def _legend_right(ax) -> None:  # noqa: ANN001 (a matplotlib Axes)
    """One legend, outside the last panel on the right, bold methods first."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def _dodge(x: np.ndarray, i: int, n: int, *, log: bool, step: float) -> np.ndarray:
    """x shifted for the i-th of n methods so their error bars do not overlap (multiplicative on a log axis)."""
    off = (i - (n - 1) / 2) * step
    return x * 2.0 ** off if log else x + off


def plot_variable(var: str, panels: list[tuple[str, list[dict], str]], classes: dict[str, list[str]],
                  path: Path) -> None:
    """Accuracy per method against `var`, error bars = the bootstrap interval, dodged; every method in its own
    colour and marker (catalog.METHOD_STYLES), LMM-Reg. and its baseline bold; shots and alpha on a log axis
    (CoOp's accuracy-vs-shots figure for shots, with the fidelity point dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
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
        log = positive and var in ("shots", "alpha")
        methods = style_order(methods_of_rows(rows))
        for i, m in enumerate(methods):
            pts = [(xs[r["value"]], r) for r in rows if r["method"] == m and np.isfinite(xs[r["value"]])]
            if not pts:
                continue
            x = _dodge(np.array([p for p, _ in pts]), i, len(methods), log=log, step=0.035 if log else 0.02)
            mean = np.array([r["mean"] for _, r in pts])
            err = np.array([[r["mean"] - r["ci_lo"], r["ci_hi"] - r["mean"]] for _, r in pts]).T
            err = np.where(np.isfinite(err), err, 0.0)
            n = sorted({r["n"] for _, r in pts})
            st = method_style(m)
            ax.errorbar(x, mean, yerr=err, capsize=2, elinewidth=st["linewidth"] * 0.7,
                        label=f"{m} (n={'/'.join(map(str, n))})", **st)
        if var == "shots":
            fid = fidelity(rows, n_classes)
            if fid is not None and fid["k"] is not None:
                ax.axvline(fid["k"], linestyle=":", color="grey", linewidth=1,
                           label=f"fidelity: linear probe = zero-shot at ≈ {fid['k']:.1f} shots")
        if log:
            ax.set_xscale("log", base=2 if var == "shots" else 10)
        ax.set_xticks([xs[v] for v in values if np.isfinite(xs[v])])
        ax.set_xticklabels([(f"all ({xs[v]:.0f})" if v == "all" else v) for v in values if np.isfinite(xs[v])],
                           fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel(VARIABLE_TITLES.get(var, var) + (" (log scale)" if log else ""))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{DATASET_TITLES.get(ds, ds)}, at {where}", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()  # before the legend, which sits outside the panels (the saved bbox grows to hold it)
    _legend_right(axes[0][-1])
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
