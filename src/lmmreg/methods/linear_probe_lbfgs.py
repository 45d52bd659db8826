"""CLIP's own linear-probe protocol (Radford et al. 2021, Sec. 3.2), as KaiyangZhou/CoOp lpclip/linear_probe.py
runs it: scikit-learn's L-BFGS L2 logistic regression on the frozen image features x = f(I) (not normalised, no
augmentation). C: the best of a coarse grid on the validation split, then `search_steps` rounds of binary search
in log10(C) between 0.1x and 10x the peak; the final classifier is fitted on all training images with that C.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmmreg.engine import Evaluation, FitResult, percent
from lmmreg.methods.base import MethodInputs, RunContext, embed, search_split

DEFAULT_C = 1.0  # scikit-learn's default: used only when no validation split exists


def _logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():  # a tiny C or a separable toy does not converge in max_iter: the repo accepts it
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(solver="lbfgs", max_iter=max_iter, C=c).fit(x, y)


def search_c(x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *, grid: list[float], steps: int,
             max_iter: int) -> float:
    """lpclip's search: coarse grid, then binary search keeping the better end each round."""
    def val_acc(c: float) -> float:
        return float((_logreg(x, y, c, max_iter).predict(val_x) == val_y).mean())

    accs = [val_acc(c) for c in grid]
    peak = grid[int(np.argmax(accs))]
    lo, hi = math.log10(peak) - 1, math.log10(peak) + 1
    best = peak
    for _ in range(steps):
        acc_lo, acc_hi = val_acc(10 ** lo), val_acc(10 ** hi)
        if acc_lo < acc_hi:
            best, lo = 10 ** hi, (lo + hi) / 2
        else:
            best, hi = 10 ** lo, (lo + hi) / 2
    return best


def linear_probe_lbfgs(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.linear_probe_lbfgs
    train_x, test_x = embed(inp.tail, inp.train_feat), embed(inp.tail, inp.test_feat)
    x, y = train_x.double().numpy(), inp.train_y.numpy()
    best_c = DEFAULT_C
    split = search_split(inp, ctx)
    if split is not None:
        fit_idx = split.fit_idx.numpy()
        val_x, val_y = split.val(inp, train_x, lambda f: embed(inp.tail, f))
        best_c = search_c(x[fit_idx], y[fit_idx], val_x.double().numpy(), val_y.numpy(), grid=c.c_grid,
                          steps=c.search_steps, max_iter=c.max_iter)
    clf = _logreg(x, y, best_c, c.max_iter)
    preds = torch.as_tensor(clf.predict(test_x.double().numpy()), dtype=torch.long)
    acc = percent(int((preds == inp.test_y).sum()), len(preds))  # exact: 5,630 of 6,400 is 87.96875, not float32's
    row = {"epoch": 1, "test_acc": acc}
    if ctx.on_epoch:
        ctx.on_epoch(row)
    state = {"coef": torch.as_tensor(clf.coef_), "intercept": torch.as_tensor(clf.intercept_),
             "classes": torch.as_tensor(clf.classes_)}
    return FitResult([row], 1, Evaluation(acc, preds, test_x.float()), state, chosen={"C": best_c})
