"""Statistics the paper lacks: seeds, bootstrap intervals, McNemar's test, per-class deltas, compactness."""

from __future__ import annotations

import math

import numpy as np


def compactness(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Intra- to inter-class distance ratio (mean distance to own centroid / mean distance between
    centroids; lower = more compact) and the silhouette score (Euclidean), of embeddings [N, D]."""
    from sklearn.metrics import silhouette_score

    classes = np.unique(labels)
    cents = np.stack([emb[labels == c].mean(axis=0) for c in classes])  # [C, D]
    pos = np.searchsorted(classes, labels)
    intra = float(np.linalg.norm(emb - cents[pos], axis=1).mean())
    diff = cents[:, None, :] - cents[None, :, :]
    d = np.sqrt((diff ** 2).sum(-1))
    inter = float(d[np.triu_indices(len(classes), k=1)].mean()) if len(classes) > 1 else float("nan")
    sil = float(silhouette_score(emb, labels)) if 1 < len(classes) < len(labels) else float("nan")
    return {"intra_inter_ratio": intra / inter if inter > 0 else float("nan"), "silhouette": sil}


def bootstrap_ci(correct: np.ndarray, *, n_boot: int, ci: float, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy (%) over test images; `correct` is [N] bool."""
    if n_boot == 0 or len(correct) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    accs = correct[idx].mean(axis=1) * 100.0
    lo, hi = np.quantile(accs, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact (binomial) McNemar test on paired per-image correctness; returns b, c and the two-sided p."""
    from scipy.stats import binomtest

    b = int(np.sum(correct_a & ~correct_b))  # a right, b wrong
    c = int(np.sum(~correct_a & correct_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only": b, "b_only": c, "p_value": p}


def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.full(n_classes, math.nan)
    for c in range(n_classes):
        m = labels == c
        if m.any():
            out[c] = 100.0 * float((preds[m] == c).mean())
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def paired_bootstrap_delta(correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int, ci: float,
                           seed: int = 0) -> tuple[float, float, float]:
    """Δ = accuracy(a) − accuracy(b) in points, with a paired percentile bootstrap interval over test images.

    `correct_a`, `correct_b` are [S, N] bool (S paired seeds, N test images, the same images in both): each
    resample draws images, keeps their pairing, and averages over seeds."""
    d = (correct_a.astype(np.float64) - correct_b.astype(np.float64)).mean(axis=0) * 100.0  # [N]
    delta = float(d.mean()) if len(d) else float("nan")
    if n_boot == 0 or len(d) == 0:
        return delta, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return delta, float(lo), float(hi)
