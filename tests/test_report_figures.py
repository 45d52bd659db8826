"""Every registered method has its own style, the same in every figure; the figures draw one line per method."""

from __future__ import annotations

import subprocess
import sys

from lmmreg.methods import METHODS
from lmmreg.report.catalog import BOLD, METHOD_STYLES, METHOD_TITLES, TABLE2, method_style, style_order

UNLISTED = ("new_method", "another_method", "a_third_one")  # methods with no style entry, as a new one starts


def _look(method: str) -> tuple[str, str]:
    st = method_style(method)
    return st["color"], st["marker"]


def test_every_registered_method_is_drawn_in_its_own_colour_and_marker():
    looks = [_look(m) for m in METHODS]
    assert len(set(looks)) == len(looks)  # no two lines of one figure look alike


def test_every_registered_method_has_a_title_and_a_table_2_row():
    assert set(METHODS) <= set(METHOD_TITLES) and set(METHODS) - {"finetune"} <= set(TABLE2)


def test_a_method_without_a_style_entry_gets_its_own_fixed_style():
    looks = [_look(m) for m in UNLISTED]
    chosen_colours = {c for c, _, _ in METHOD_STYLES.values()}
    chosen_markers = {m for _, m, _ in METHOD_STYLES.values()}
    assert all(c not in chosen_colours and m not in chosen_markers for c, m in looks)  # never a listed method's
    assert len(set(looks)) == len(looks)
    # The same in another process (no salted hash): a figure drawn tomorrow matches today's.
    code = f"from lmmreg.report.catalog import method_style; print([method_style(m)['color'] for m in {UNLISTED!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([c for c, _ in looks])


def test_lmm_reg_and_its_baseline_are_bold_and_drawn_last():
    assert set(BOLD) == {"lmm_reg", "finetune"}
    bold = {m for m in (*METHODS, *UNLISTED) if method_style(m)["linewidth"] > method_style("coop")["linewidth"]}
    assert bold == {"lmm_reg", "finetune"}
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
