"""Which methods the report shows where, and under what name: one table keyed by method name."""

from __future__ import annotations

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
}
TABLE1 = ("finetune", "lmm_reg")
# The field's baselines, re-run on this project's cached features and data: same protocol as the paper's rows.
BASELINES = ("linear_probe_lbfgs", "prolip", "gda", "tip_adapter", "tip_adapter_f", "clip_adapter", "coop")
TABLE2 = ("zero_shot", "zero_shot_lmm", "linear_probe", "concat", *BASELINES, "lmm_reg")
# Methods whose test embeddings are their own (not the frozen x = f(I)): compared for compactness.
COMPACTNESS = ("linear_probe", "concat", "finetune", "lmm_reg", "prolip", "clip_adapter")
