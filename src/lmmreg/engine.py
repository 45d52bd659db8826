"""One training engine for every trained method: mini-batch optimisation on cached inputs, test
accuracy after every epoch (the paper's Fig. 2), the reported epoch chosen by `train.report_epoch`.
The budget (`train.budget`) is epochs or optimiser steps; see `schedule`.

An epoch here is a few matrix products over the feature cache, never a CLIP forward pass.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from lmmreg.config import TrainConfig
from lmmreg.losses import lmm_reg_loss
from lmmreg.progress import progress

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    acc: float  # percent
    preds: torch.Tensor  # [N] int64
    emb: torch.Tensor  # [N, D] embeddings the classifier saw


@dataclass
class FitResult:
    history: list[dict]  # one dict per epoch: epoch, loss, ce, reg, test_acc
    reported_epoch: int
    final: Evaluation  # evaluation at the reported epoch
    state_dict: dict
    chosen: dict = field(default_factory=dict)  # hyper-parameters a method picked on its validation split
    # accuracy (%) on the training images (clean view) after the last epoch, for lmmreg.convergence; None when the
    # method was not trained by `fit`
    train_acc: float | None = None


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
             device: str | torch.device = "cpu") -> Evaluation:
    model.eval()
    preds, embs = [], []
    for i in range(0, len(x), batch_size):
        emb, logits = model(x[i:i + batch_size].to(device, non_blocking=True))
        preds.append(logits.argmax(dim=-1).cpu())
        embs.append(emb.float().cpu())
    p = torch.cat(preds)
    acc = percent(int((p == y).sum()), len(y))
    return Evaluation(acc, p, torch.cat(embs))


def percent(correct: int, total: int) -> float:
    """Accuracy in % from integer counts, so 351 of 400 is exactly 87.75 (not float32's 87.7499997)."""
    return 100.0 * correct / total if total else float("nan")


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def cosine_schedule(opt: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str = "step",
                    warmup_epochs: int = 0, warmup_lr: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine annealing to 0, stepped after every optimiser step (`fit` does that).

    per="step": over all steps (Tip-Adapter-F, ProLIP). per="epoch": the lr changes once per epoch, over `epochs`,
    after `warmup_epochs` at the constant `warmup_lr` (Dassl's cosine + constant warm-up, which CoOp uses).
    """
    base = opt.param_groups[0]["lr"]
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if per == "step":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        epoch = step // steps_per_epoch
        if epoch < warmup_epochs:
            return warmup_lr / base
        return 0.5 * (1 + math.cos(math.pi * min(epoch - warmup_epochs, epochs) / epochs))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one pass over `n` training images: the last batch may be partial."""
    return -(-n // batch_size)


def budget_schedule(cfg: TrainConfig, n: int) -> tuple[int, int, int]:
    """(epochs, evaluate every this many epochs, optimiser steps) for `n` training images.

    `budget: epochs` (or `steps: 0`): `cfg.epochs` passes. `budget: steps`: exactly `cfg.steps` optimiser steps,
    however small the training set, so a 1-shot run is not under-trained; its history still holds about
    `cfg.epochs` evaluations (the first epoch, every `eval_every`-th and the last).
    """
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    if cfg.budget == "epochs" or cfg.steps == 0 or n == 0:
        return cfg.epochs, 1, cfg.epochs * per_epoch
    epochs = -(-cfg.steps // per_epoch)
    return epochs, max(1, round(epochs / cfg.epochs)), cfg.steps


def fit(model: nn.Module, *, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
        test_y: torch.Tensor, centroids: torch.Tensor | None, alpha: float, cfg: TrainConfig, seed: int,
        device: str | torch.device = "cpu", on_epoch: Callable[[dict], None] | None = None,
        views: bool = False, desc: str = "train", optimizer: torch.optim.Optimizer | None = None,
        schedule: Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler] | None = None,
        penalty: Callable[[], torch.Tensor] | None = None, eval_every_epoch: bool = True,
        eval_name: str = "test_acc") -> FitResult:
    """Train `model` (returns (emb, logits)) with J_ce + alpha * J_reg; evaluate on test after every epoch
    (after about `cfg.epochs` of them when a step budget stretches a small training set over more epochs).

    With `views`, `train_x` is [N, V, ...]: V cached views of each training image (view 0 the clean one); every
    epoch draws one view per image, which is augmentation without a CLIP forward pass.

    A baseline that optimises differently passes its own `optimizer` (over the model's trainable parameters),
    `schedule(optimizer, steps_per_epoch)` (stepped after every optimiser step) and `penalty()`, a term on the
    parameters added to the loss and logged as `reg` (ProLIP's lambda ||W - W0||^2). A hyper-parameter search
    run needs only its last epoch's accuracy: `eval_every_epoch=False` evaluates only then, and passes
    `eval_name="val_acc"`, so its progress line does not call its validation split test.
    """
    if cfg.report_epoch == "best" and not eval_every_epoch:
        raise ValueError("report_epoch 'best' needs an evaluation every epoch")
    model.to(device)
    cents = centroids.to(device) if centroids is not None else None
    opt = optimizer or build_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    sched = schedule(opt, steps_per_epoch(len(train_x), cfg.batch_size)) if schedule is not None else None
    gen = torch.Generator().manual_seed(seed)
    n = len(train_x)
    epochs, eval_every, max_steps = budget_schedule(cfg, n)
    history: list[dict] = []
    best: tuple[float, int, dict, Evaluation] | None = None
    last_eval: Evaluation | None = None
    step = 0
    bar = progress(range(1, epochs + 1), desc=desc, unit="epoch", leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=gen)
        view = torch.randint(train_x.shape[1], (n,), generator=gen) if views else None  # [N]
        sums = {"loss": 0.0, "ce": 0.0, "reg": 0.0}
        seen = 0
        for i in range(0, n, cfg.batch_size):
            if step == max_steps:  # budget: steps ends inside the last epoch
                break
            step += 1
            idx = order[i:i + cfg.batch_size]
            xb = train_x[idx, view[idx]] if views else train_x[idx]
            xb, yb = xb.to(device, non_blocking=True), train_y[idx].to(device, non_blocking=True)
            emb, logits = model(xb)
            terms = lmm_reg_loss(logits, emb, yb, cents, alpha=alpha, reduction=cfg.reg_reduction,
                                 normalize=cfg.normalize)
            if penalty is not None:
                reg = penalty()
                terms = {"loss": terms["loss"] + reg, "ce": terms["ce"], "reg": reg}
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            if sched is not None:
                sched.step()
            for k in sums:
                sums[k] += terms[k].item() * len(idx)
            seen += len(idx)
        evaluated = epoch == 1 or epoch % eval_every == 0 or epoch == epochs
        if not evaluated or (not eval_every_epoch and epoch != epochs):
            continue
        last_eval = evaluate(model, test_x, test_y, device=device)
        row = {"epoch": epoch, **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}, "test_acc": last_eval.acc}
        bar.set_postfix({"loss": f"{row['train_loss']:.3f}", eval_name: f"{last_eval.acc:.2f}"})
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if cfg.report_epoch == "best" and (best is None or last_eval.acc > best[0]):
            best = (last_eval.acc, epoch, copy.deepcopy(model.state_dict()), last_eval)
    # the optimiser's end point, whatever epoch is reported: one forward over the (clean) training inputs
    train_acc = evaluate(model, train_x[:, 0] if views else train_x, train_y, device=device).acc
    if cfg.report_epoch == "best" and best is not None:
        _, epoch, state, ev = best
        return FitResult(history, epoch, ev, state, train_acc=train_acc)
    return FitResult(history, epochs, last_eval, {k: v.detach().cpu() for k, v in model.state_dict().items()},
                     train_acc=train_acc)
