"""CLAP, CLass-Adaptive linear Probing (Silva-Rodriguez et al. CVPR 2024, "A Closer Look at the Few-Shot Adaptation
of Large Vision-Language Models"; jusiro/CLAP trainers/adapters.py): a linear probe that starts at the zero-shot
prototypes and is held near them by a per-class penalty whose weights come from zero-shot accuracy on the training
images. It needs no validation set: nothing is searched and the last epoch is reported.

    logits = s normalize(f) normalize(W)^T                 W [C, D] starts at T, the (un-normalised) class prompts
    J = CE + 1/C sum_c lambda_c ||w_c - t_c||^2            (CONSTRAINT l2; `constraint: none` is ZS-LP, CE alone)
    lambda_c = mean over the training samples of class c of softmax(s normalize(f) normalize(T)^T)_c

s = exp(logit_scale) of the CLIP model (the repo reads clip_model.logit_scale). Optimiser: Dassl's SGD, lr 0.1,
momentum 0.9, no weight decay, batch 256, 300 epochs, cosine per epoch after one warm-up epoch at 1e-5
(configs/trainers/SGD_lr1e-1_B256_ep300.yaml). The repo trains on 20 augmented passes over the shots; here the
cached views (clean + `clip.augment_views`), one per image and epoch, and lambda is computed over all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.engine import FitResult
from lmmreg.methods.base import MethodInputs, RunContext, fit_dassl, frozen_embeddings


class ClapHead(nn.Module):
    """The prototypes W [C, D] (trained), the zero-shot prototypes T they start from, CLIP's scale."""

    def __init__(self, class_text: torch.Tensor, scale: float):
        super().__init__()
        self.prototypes = nn.Parameter(class_text.clone())  # W [C, D]
        self.register_buffer("base", class_text.clone())  # T [C, D], un-normalised as the repo keeps it
        self.scale = scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.scale * F.normalize(x, dim=-1) @ F.normalize(self.prototypes, dim=-1).T

    def constraint(self, multipliers: torch.Tensor) -> torch.Tensor:
        """1/C sum_c lambda_c ||w_c - t_c||^2 (zero_shot_constraint, l2)."""
        return (multipliers * (self.prototypes - self.base).pow(2).sum(-1)).mean()


def class_multipliers(logits: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """lambda [C]: each class's mean zero-shot softmax probability of its own class (init_lagrangian_multipliers)."""
    onehot = F.one_hot(y, n_classes).to(logits.dtype)  # [N, C]
    return torch.diag(torch.softmax(logits, -1).T @ onehot) / onehot.sum(0)


def clap(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.clap
    n_classes = inp.class_text.shape[0]
    train_x, views, test_x = frozen_embeddings(inp)
    model = ClapHead(inp.class_text, inp.logit_scale).to(ctx.device)
    penalty = None
    if c.constraint == "l2":
        samples = views.flatten(0, 1) if views is not None else train_x  # [N * V, D]: every training sample
        labels = inp.train_y.repeat_interleave(views.shape[1]) if views is not None else inp.train_y
        with torch.no_grad():
            lam = class_multipliers(model(samples.to(ctx.device))[1], labels.to(ctx.device), n_classes)
        penalty = lambda: model.constraint(lam)  # noqa: E731
    res = fit_dassl(model, [model.prototypes], c, inp, ctx, train_x=train_x, views=views, test_x=test_x,
                    penalty=penalty)
    if penalty is not None:
        res.state_dict["multipliers"] = lam.detach().cpu()
    return res
