"""LP++ (Huang et al. CVPR 2024, "LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP";
FereshteShakeri/FewShot-CLIP-Strong-Baseline methods/linear_probe_p2.py): a linear probe whose class weights are
blended with the zero-shot text weights by learnt class multipliers, trained full batch with step sizes computed
from the data.

    logits = f W^T + b + alpha * (f T^T)                    f [N, D] normalised, T [C, D] normalised class prompts
    W0 = the class sums of f (the repo's compute_centroids leaves the division out), b0 = nn.Linear's default
    alpha0 = 250 * mean_c alpha~_c,  alpha~_c = mean of f_i . t_c over the training images of class c
    lr_W = 4 N / lambda_max(F^T F),  lr_alpha = N / (4 max_c sum_i (f_i . t_c)^2)

Every epoch one full-batch cross-entropy step on (W, b) (SGD, momentum 0.9, lr_W); every `alpha_every`-th epoch
alpha -= lr_alpha * grad. The official code never zeroes alpha's gradient, so that gradient is the sum over every
epoch so far; this module does the same. 300 epochs. Validation picks the epoch (the last one of the highest
validation accuracy, as the repo's `>=`); the probe is then trained on every training image for that many epochs.
Without a validation split, the last epoch. Nothing else is searched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.config import LPPlusPlusConfig
from lmmreg.engine import FitResult, evaluate
from lmmreg.methods.base import MethodInputs, RunContext, ScoreModel, accuracy, embed, search_split

ALPHA_INIT = 250.0  # alpha_init = 250 / shots * (alpha~ * shots)
LR_W_FACTOR = 4.0  # lr_w = 4 N / max eigenvalue
LR_ALPHA_DIVISOR = 4.0  # lr_alpha = N / (4 max_c sum_i (f_i . t_c)^2)


class LPPlusPlus(nn.Module):
    """logits = f W^T + b + alpha * (f T^T); W, b trained by SGD, alpha by its own gradient steps."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor, text: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())  # W [C, D]
        self.bias = nn.Parameter(bias.clone())  # b [C]
        self.alpha = nn.Parameter(alpha.clone())  # [C], one multiplier per class
        self.register_buffer("text", text)  # T [C, D], normalised

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.weight.T + self.bias + self.alpha * (f @ self.text.T)  # [B, C]


def lp_pp_init(f: torch.Tensor, y: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, float, float, float]:
    """(W0 [C, D], alpha0, lr_W, lr_alpha) from normalised features f [N, D], labels [N], normalised T [C, D]."""
    n_classes = text.shape[0]
    onehot = F.one_hot(y, n_classes).to(f.dtype)  # [N, C]
    w0 = onehot.T @ f  # [C, D]: class sums
    z = f @ text.T  # [N, C] text logits
    alpha_tilde = (onehot * z).sum(0) / onehot.sum(0)  # [C]: mean f_i . t_c over class c
    alpha0 = ALPHA_INIT * alpha_tilde.double().mean().item()
    lr_w = LR_W_FACTOR * len(f) / torch.linalg.eigvalsh((f.T @ f).double()).max().item()
    lr_alpha = len(f) / (LR_ALPHA_DIVISOR * z.pow(2).sum(0).max().item())
    return w0, alpha0, lr_w, lr_alpha


def train_lp_pp(f: torch.Tensor, y: torch.Tensor, text: torch.Tensor, bias0: torch.Tensor, cfg: LPPlusPlusConfig,
                *, epochs: int, after_epoch=None) -> LPPlusPlus:
    """LP++ on normalised features f [N, D] for `epochs` epochs; `after_epoch(epoch, model)` sees every epoch."""
    w0, alpha0, lr_w, lr_alpha = lp_pp_init(f, y, text)
    model = LPPlusPlus(w0, bias0, torch.full((text.shape[0],), alpha0, dtype=f.dtype, device=f.device), text)
    opt = torch.optim.SGD([model.weight, model.bias], lr=lr_w, momentum=cfg.momentum)
    for epoch in range(1, epochs + 1):
        loss = F.cross_entropy(model(f), y)
        opt.zero_grad()  # W and b only: alpha's gradient accumulates over the epochs, as in the official code
        loss.backward()
        opt.step()
        if epoch % cfg.alpha_every == 0:
            with torch.no_grad():
                model.alpha -= lr_alpha * model.alpha.grad
        if after_epoch is not None:
            after_epoch(epoch, model)
    return model


def lp_pp(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.lp_pp
    train_x, test_x = embed(inp.tail, inp.train_feat), embed(inp.tail, inp.test_feat)  # [N, D]: the clean view
    dev = ctx.device
    f, y = F.normalize(train_x, dim=-1).to(dev), inp.train_y.to(dev)
    text = F.normalize(inp.class_text, dim=-1).to(dev)
    bias0 = nn.Linear(f.shape[1], text.shape[0]).bias.detach().to(dev, f.dtype)  # the repo's nn.Linear default
    epochs = c.epochs  # kept where no validation split exists
    split = search_split(inp, ctx)
    if split is not None:
        val_x, val_y = split.val(inp, train_x, lambda feat: embed(inp.tail, feat))
        val_f = F.normalize(val_x, dim=-1).to(dev)
        best = {"acc": -1.0, "epoch": c.epochs}

        @torch.no_grad()
        def watch(epoch: int, model: LPPlusPlus) -> None:
            acc = accuracy(model(val_f), val_y)
            if acc >= best["acc"]:  # the repo's `>=`: the last epoch of the highest validation accuracy
                best.update(acc=acc, epoch=epoch)

        fit = split.fit_idx.to(dev)
        train_lp_pp(f[fit], y[fit], text, bias0, c, epochs=c.epochs, after_epoch=watch)
        epochs = best["epoch"]
    model = train_lp_pp(f, y, text, bias0, c, epochs=epochs).eval()
    with torch.no_grad():
        ev = evaluate(ScoreModel(lambda x: model(F.normalize(x, dim=-1))), test_x, inp.test_y, device=dev)
    row = {"epoch": 1, "test_acc": ev.acc}
    if ctx.on_epoch:
        ctx.on_epoch(row)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return FitResult([row], 1, ev, state, chosen={"epochs": epochs})
