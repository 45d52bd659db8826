"""Which methods the report shows where, and under what name: one table keyed by method name."""

from __future__ import annotations

import hashlib

METHOD_TITLES = {
    "finetune": "Finetuning w/o Reg. (Baseline)",
    "lmm_reg": "LMM-Reg.-CLIP (Proposed)",
    "linear_probe": "CLIP (image emb.) [1]",
    "concat": "CLIP (image & text emb.) [14]",
    "zero_shot": "CLIP zero-shot, class-name prompts (extra)",
    "zero_shot_lmm": "CLIP zero-shot, LMM centroids as classifier (extra)",
    "linear_probe_lbfgs": "CLIP linear probe, L-BFGS, C on validation (Radford et al. 2021) (re-run)",
    "prolip": "ProLIP (Fahes et al. 2024) (re-run)",
    "gda": "GDA (Wang et al. 2024) (re-run)",
    "tip_adapter": "Tip-Adapter (Zhang et al. 2022) (re-run)",
    "tip_adapter_f": "Tip-Adapter-F (Zhang et al. 2022) (re-run)",
    "clip_adapter": "CLIP-Adapter (Gao et al. 2021) (re-run)",
    "coop": "CoOp [8] (re-run)",
    "lp_pp": "LP++ (Huang et al. 2024) (re-run)",
    "clap": "CLAP (Silva-Rodriguez et al. 2024) (re-run, no validation set)",
    "cross_modal": "Cross-modal linear probe (Lin et al. 2023) (re-run)",
    "cross_modal_lmm": "Cross-modal linear probe, LMM descriptions as samples (Lin et al. 2023) (re-run)",
}
TABLE1 = ("finetune", "lmm_reg")
# The paper's own rows, in the order a legend lists them: the proposed method, its baseline, the two CLIP rows the
# paper compares with, and zero-shot CLIP with class prompts and with the LMM centroids (this project's extras).
PAPER_ROWS = ("lmm_reg", "finetune", "linear_probe", "concat", "zero_shot", "zero_shot_lmm")
# The field's baselines, re-run on this project's cached features and data: same protocol as the paper's rows.
BASELINES = ("linear_probe_lbfgs", "prolip", "gda", "tip_adapter", "tip_adapter_f", "clip_adapter", "coop", "lp_pp",
             "clap", "cross_modal", "cross_modal_lmm")
TABLE2 = ("zero_shot", "zero_shot_lmm", "linear_probe", "concat", *BASELINES, "lmm_reg")
# Methods whose test embeddings are their own (not the frozen x = f(I)): compared for compactness.
COMPACTNESS = ("linear_probe", "concat", "finetune", "lmm_reg", "prolip", "clip_adapter")
# One style per method, the same in every figure: (colour, marker, line style). No colour or marker repeated;
# LMM-Reg. and its baseline (finetune) are drawn bold (BOLD), the others thin. Order = legend order. A method
# without an entry gets `default_style`: a new method needs none.
METHOD_STYLES = {
    "zero_shot": ("#7f7f7f", "x", "--"),
    "zero_shot_lmm": ("#bcbd22", "+", "--"),
    "linear_probe": ("#2ca02c", "^", "-"),
    "concat": ("#9467bd", "v", "-"),
    "linear_probe_lbfgs": ("#17becf", "<", "-"),
    "prolip": ("#ff7f0e", "D", "-"),
    "gda": ("#8c564b", ">", "-"),
    "tip_adapter": ("#e377c2", "p", "-"),
    "tip_adapter_f": ("#7b4173", "h", "-"),
    "clip_adapter": ("#393b79", "*", "-"),
    "coop": ("#637939", "P", "-"),
    "lp_pp": ("#e7ba52", "d", "-"),
    "clap": ("#843c39", "H", "-"),
    "cross_modal": ("#6b6ecf", "8", "-"),
    "cross_modal_lmm": ("#9c9ede", "X", "-"),
    "finetune": ("#1f77b4", "s", "-"),
    "lmm_reg": ("#d62728", "o", "-"),
}
BOLD = ("finetune", "lmm_reg")
# Colours and markers no entry above uses, for the methods without one
DEFAULT_COLOURS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
                   "#5254a3", "#b5cf6b", "#bd9e39", "#ad494a", "#a55194", "#d6616b", "#ce6dbd")
DEFAULT_MARKERS = ("1", "2", "3", "4")


def default_style(method: str) -> tuple[str, str, str]:
    """(colour, marker, line style) of a method without a METHOD_STYLES entry: picked by a hash of its name, so
    the same in every figure and every process, and never an entry's colour or marker."""
    h = int.from_bytes(hashlib.sha256(method.encode()).digest()[:8], "big")
    colour, h = DEFAULT_COLOURS[h % len(DEFAULT_COLOURS)], h // len(DEFAULT_COLOURS)
    return colour, DEFAULT_MARKERS[h % len(DEFAULT_MARKERS)], ":"


def method_style(method: str) -> dict:
    """matplotlib keyword arguments for `method` (a method missing from METHOD_STYLES: `default_style`, thin)."""
    color, marker, line = METHOD_STYLES.get(method) or default_style(method)
    bold = method in BOLD
    return {"color": color, "marker": marker, "linestyle": line, "linewidth": 2.2 if bold else 1.0,
            "markersize": 6.5 if bold else 4.5, "zorder": 3 if bold else 2, "alpha": 1.0 if bold else 0.85}


def style_order(methods: list[str] | set[str]) -> list[str]:
    """`methods` in legend order: the styled ones in METHOD_STYLES order (bold last, on top), then the rest."""
    return [m for m in METHOD_STYLES if m in methods] + sorted(set(methods) - set(METHOD_STYLES))
