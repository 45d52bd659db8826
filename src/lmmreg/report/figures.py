"""The report's figures: Fig. 2 (test accuracy per epoch) and the regime study's accuracy against a variable."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmmreg.config import Params
from lmmreg.report.catalog import BOLD, METHOD_TITLES, method_style, style_order
from lmmreg.report.cells import cell_runs
from lmmreg.report.paper import DATASET_TITLES
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study import VARIABLE_TITLES, fidelity, methods_of_rows, shots_x, value_key


def plot_fig2(snap: Snapshot, params: Params, out_png: Path, out_svg: Path) -> None:
    """Test accuracy per epoch of every method, one panel per dataset: the mean curve over seeds, with a band of
    ± std for LMM-Reg. and its baseline (bold); a method evaluated once (zero-shot, GDA ...) is a flat line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "lmmreg"  # deterministic SVG ids
    dss = params.datasets
    fig, axes = plt.subplots(1, len(dss), figsize=(5.6 * len(dss), 4.2), squeeze=False)
    for ax, d in zip(axes[0], dss, strict=True):
        found = {r["method"] for r in snap.runs if r["role"] == "current" and r["dataset"] == d}
        curves_of = {}
        for m in style_order(found):
            runs = cell_runs(snap, d, m)
            curves = [np.array([a for _, a in snap.histories.get(r["run_id"], [])]) for r in runs]
            if curves and len({len(c) for c in curves}) == 1 and len(curves[0]):
                x = np.array([e for e, _ in snap.histories[runs[0]["run_id"]]])  # evaluated epochs
                curves_of[m] = (x, np.stack(curves), len(runs))
        span = [min(x[0] for x, _, _ in curves_of.values()), max(x[-1] for x, _, _ in curves_of.values())] \
            if curves_of else [0, 1]
        for m, (x, c, n) in curves_of.items():
            st = method_style(m)
            if len(x) == 1:  # evaluated once: flat across the epochs, its marker at both ends
                x, c = np.array(span), np.repeat(c, 2, axis=1)
            ax.plot(x, c.mean(0), label=f"{METHOD_TITLES.get(m, m)} (n={n})", markevery=max(1, len(x) // 8), **st)
            if m in BOLD:
                ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), color=st["color"], alpha=0.15,
                                linewidth=0)
        demo = params.source(d).layout == "demo"
        ax.set_title("Synthetic demo data (not the paper's)" if demo else DATASET_TITLES.get(d, d), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()  # before the legend, which sits outside the panels (the saved bbox grows to hold it)
    _legend_right(axes[0][-1])
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
