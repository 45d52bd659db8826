"""The report's figures: Fig. 2 (test accuracy per epoch) and the regime study's accuracy against a variable."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmmreg.config import Params
from lmmreg.report.catalog import METHOD_TITLES
from lmmreg.report.cells import cell_runs
from lmmreg.report.paper import DATASET_TITLES
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study import VARIABLE_TITLES, fidelity, methods_of_rows, shots_x, value_key


def plot_fig2(snap: Snapshot, params: Params, out_png: Path, out_svg: Path) -> None:
    """Test accuracy per epoch, baseline vs proposed, one panel per dataset: mean curve, band = ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "lmmreg"  # deterministic SVG ids
    dss = params.datasets
    fig, axes = plt.subplots(1, len(dss), figsize=(5 * len(dss), 3.8), squeeze=False)
    for ax, d in zip(axes[0], dss, strict=True):
        for m, color in (("finetune", "tab:blue"), ("lmm_reg", "tab:red")):
            runs = cell_runs(snap, d, m)
            curves = [np.array([a for _, a in snap.histories[r["run_id"]]]) for r in runs]
            if not curves or len({len(c) for c in curves}) != 1:
                continue
            c = np.stack(curves)
            x = np.array([e for e, _ in snap.histories[runs[0]["run_id"]]])  # evaluated epochs (sparse under shots)
            ax.plot(x, c.mean(0), color=color, label=f"{METHOD_TITLES[m]} (n={len(runs)})")
            ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), color=color, alpha=0.2, linewidth=0)
        demo = params.source(d).layout == "demo"
        ax.set_title("Synthetic demo data (not the paper's)" if demo else DATASET_TITLES.get(d, d), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    fig.savefig(out_svg, metadata={"Date": None})
    plt.close(fig)


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
