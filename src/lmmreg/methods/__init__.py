"""Every method of Tables 1-2 and the field's baselines, behind one registry, on the same cached features.

| method             | row                                    | input                        | trains                |
|--------------------|----------------------------------------|------------------------------|-----------------------|
| zero_shot          | (extra) CLIP zero-shot, class prompts  | x = f(I)                     | nothing               |
| zero_shot_lmm      | (extra) zero-shot, LMM centroids       | x = f(I)                     | nothing               |
| linear_probe       | CLIP (image emb.) [1]                  | x = f(I), frozen             | linear head           |
| concat             | CLIP (image & text emb.) [14]          | [x ; mean LMM text emb of I] | linear head           |
| finetune           | Finetuning w/o Reg. (baseline)         | boundary cache               | proj + head, alpha 0  |
| lmm_reg            | LMM-Reg.-CLIP (proposed)               | boundary cache               | proj + head, alpha    |
| prolip             | ProLIP (re-run)                        | boundary cache               | proj, text head fixed |
| gda                | GDA (re-run)                           | x = f(I), frozen             | nothing (statistics)  |
| tip_adapter        | Tip-Adapter (re-run)                   | x = f(I), frozen             | nothing (cache)       |
| tip_adapter_f      | Tip-Adapter-F (re-run)                 | x = f(I), frozen             | cache keys            |
| clip_adapter       | CLIP-Adapter (re-run)                  | x = f(I), frozen             | bottleneck MLP        |
| coop               | CoOp (re-run)                          | x = f(I) + CLIP text tower   | context vectors       |
| linear_probe_lbfgs | CLIP's L-BFGS linear probe (re-run)    | x = f(I), frozen             | logistic regression   |

One module per family registers its methods (`@register`); adding a method is adding a module and its import
below. `run_method` looks a name up; `get_method(name)` says what a method needs and which settings it depends on.
"""

from __future__ import annotations

import torch

from lmmreg.config import BaselinesConfig, TrainConfig
from lmmreg.engine import FitResult
from lmmreg.methods import (  # noqa: F401  (each module registers its methods)
    clip_adapter,
    coop,
    finetune,
    gda,
    linear,
    linear_probe_lbfgs,
    prolip,
    tip_adapter,
    zero_shot,
)
from lmmreg.methods.base import REGISTRY, MethodInputs, MethodSpec, RunContext, check_inputs, get_method

__all__ = ["REGISTRY", "MethodInputs", "MethodSpec", "get_method", "run_method"]


def run_method(method: str, inp: MethodInputs, *, alpha: float, cfg: TrainConfig, seed: int,
               device: str | torch.device = "cpu", on_epoch=None, desc: str = "train",
               baselines: BaselinesConfig | None = None) -> FitResult:
    """Train (if the method trains) and evaluate; training-free methods return a one-row history."""
    spec = get_method(method)
    check_inputs(spec, inp)
    torch.manual_seed(seed)  # a head's initialisation is part of the seed
    ctx = RunContext(alpha=alpha, cfg=cfg, baselines=baselines or BaselinesConfig(), seed=seed, device=device,
                     on_epoch=on_epoch, desc=desc)
    return spec.fn(inp, ctx)
