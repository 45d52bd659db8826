"""Every registered method has its own style, the same in every figure; the figures draw one line per method."""

from __future__ import annotations

from lmmreg.methods import REGISTRY
from lmmreg.report.catalog import BOLD, METHOD_STYLES, method_style, style_order


def test_every_registered_method_has_its_own_colour_and_marker():
    assert set(REGISTRY) <= set(METHOD_STYLES)
    colours = [c for c, _, _ in METHOD_STYLES.values()]
    markers = [m for _, m, _ in METHOD_STYLES.values()]
    assert len(set(colours)) == len(colours) == len(set(markers)) >= 13


def test_lmm_reg_and_its_baseline_are_bold_and_drawn_last():
    assert set(BOLD) == {"lmm_reg", "finetune"}
    assert method_style("lmm_reg")["linewidth"] > 2 * method_style("coop")["linewidth"] / 1.5
    assert style_order({"lmm_reg", "coop", "finetune", "zero_shot", "new_method"})[-3:] == [
        "finetune", "lmm_reg", "new_method"]


def test_the_study_figure_has_one_line_per_method(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmmreg.report.figures import plot_variable

    rows = [{"value": v, "method": m, "mean": 50.0 + i, "ci_lo": 45.0 + i, "ci_hi": 55.0 + i, "n": 3,
             "n_train_images": 40.0} for v in ("1", "4", "all") for i, m in enumerate(METHOD_STYLES)]
    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig: drawn.setdefault("fig", fig))
    plot_variable("shots", [("demo", rows, "here")], {"demo": ["a", "b", "c", "d"]}, tmp_path / "shots.png")
    ax = drawn["fig"].axes[0]
    markers = [line for line in ax.get_lines() if line.get_marker() not in ("None", "", "_")]  # error caps are "_"
    styles = {(line.get_color(), line.get_marker()) for line in markers}
    assert len(styles) == len(METHOD_STYLES) and ax.get_xscale() == "log"
    assert (tmp_path / "shots.png").stat().st_size > 0
