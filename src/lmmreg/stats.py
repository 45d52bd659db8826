"""Statistics the paper lacks: seeds, two-level bootstrap intervals, McNemar's test, seed-level tests, the minimum
detectable effect, per-class deltas, compactness."""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np


def silhouette(emb: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> float:
    """sklearn's `silhouette_score` (Euclidean), computed as per-class sums of distances (a matmul with the
    one-hot labels) over row chunks: the same float64 formula, about 4x faster on 6,400 test images, whose
    distance matrix it never holds whole. Each chunk is computed in one reused buffer, in place, in the order
    `sq_i - 2 x_i.x_j + sq_j` (a - b is a + (-b) in IEEE arithmetic: the bits of the out-of-place form).

    A method whose test embeddings are the frozen features gives every seed the same matrix: the last few
    results are remembered by the content of (emb, labels), so each distinct matrix is computed once a process."""
    x = np.ascontiguousarray(emb, dtype=np.float64)
    y = np.ascontiguousarray(labels)
    key = (x.shape, y.dtype.str, chunk, hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest(),
           hashlib.blake2b(y.tobytes(), digest_size=16).hexdigest())
    if key not in _SILHOUETTES:
        if len(_SILHOUETTES) >= 8:
            _SILHOUETTES.pop(next(iter(_SILHOUETTES)))
        _SILHOUETTES[key] = _silhouette(x, y, chunk)
    return _SILHOUETTES[key]


_SILHOUETTES: dict[tuple, float] = {}


def _silhouette(x: np.ndarray, labels: np.ndarray, chunk: int) -> float:
    classes, pos = np.unique(labels, return_inverse=True)
    n, k = len(x), len(classes)
    counts = np.bincount(pos, minlength=k)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), pos] = 1.0
    sq = np.einsum("ij,ij->i", x, x)
    sums = np.empty((n, k))
    buf = np.empty((min(chunk, n), n))
    for i in range(0, n, chunk):
        stop = min(i + chunk, n)
        d = buf[:stop - i]
        np.matmul(x[i:stop], x.T, out=d)
        d *= -2.0
        d += sq[i:stop, None]
        d += sq[None, :]  # squared distances
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        d[np.arange(stop - i), np.arange(i, stop)] = 0.0  # a point's distance to itself
        np.matmul(d, onehot, out=sums[i:stop])
    own = counts[pos]
    a = sums[np.arange(n), pos] / np.maximum(own - 1, 1)
    other = sums / counts[None, :]
    other[np.arange(n), pos] = np.inf
    b = other.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    s[own == 1] = 0.0  # sklearn: a sample alone in its class scores 0
    return float(np.mean(np.nan_to_num(s)))


def compactness(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Intra- to inter-class distance ratio (mean distance to own centroid / mean distance between
    centroids; lower = more compact) and the silhouette score (Euclidean), of embeddings [N, D]."""
    classes = np.unique(labels)
    cents = np.stack([emb[labels == c].mean(axis=0) for c in classes])  # [C, D]
    pos = np.searchsorted(classes, labels)
    intra = float(np.linalg.norm(emb - cents[pos], axis=1).mean())
    diff = cents[:, None, :] - cents[None, :, :]
    d = np.sqrt((diff ** 2).sum(-1))
    inter = float(d[np.triu_indices(len(classes), k=1)].mean()) if len(classes) > 1 else float("nan")
    sil = silhouette(emb, labels) if 1 < len(classes) < len(labels) else float("nan")
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
    b = int(np.sum(correct_a & ~correct_b))  # a right, b wrong
    c = int(np.sum(~correct_a & correct_b))
    return {"a_only": b, "b_only": c, "p_value": mcnemar_p(b, c)}


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


@functools.lru_cache(maxsize=4)
def _image_draws(n: int, n_boot: int, seed: int) -> tuple[np.ndarray, dict]:
    """How often each of n test images is drawn in each of n_boot resamples ([B, N] counts), and the generator's
    state after the draw. Every cell of a report has the same test set, so the draw is made once."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, n, size=(n_boot, n))  # [B, N] drawn image indices
    offsets = (images + n * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(offsets, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)  # [B, N]
    counts.setflags(write=False)
    return counts, rng.bit_generator.state


def two_level_bootstrap(values: np.ndarray, *, n_boot: int, ci: float, seed: int = 0) -> dict[str, float]:
    """Mean of `values` [S, N] (S seeds, N test images; 0/1 correctness, or a paired difference of two) in points,
    with a two-level percentile bootstrap interval: each resample draws S seeds and N images with replacement,
    independently, and averages the drawn [S, N] block, so the interval carries both the seed-to-seed variance and
    the test set's sampling variance. Paired where the comparison is: a difference of two methods' correctness on
    the same seeds and images is resampled as one matrix. Also returns the bootstrap standard error `se`.

    Vectorised: the drawn block's mean is w_image · values^T · w_seed / (S·N) with w the draw counts, two matrix
    products per call and no [B, S, N] array. The image draw comes first from the generator, as in `bootstrap_ci`:
    with identical rows (no seed variance) the interval is `bootstrap_ci`'s."""
    v = np.asarray(values, dtype=np.float64)
    s, n = v.shape
    mean = float(v.mean() * 100.0) if v.size else float("nan")
    if n_boot == 0 or v.size == 0:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "se": float("nan")}
    counts, state = _image_draws(n, n_boot, seed)
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    seeds = rng.integers(0, s, size=(n_boot, s))  # [B, S] drawn seed indices
    w_seed = (seeds[:, :, None] == np.arange(s)).sum(axis=1) / s  # [B, S] draw frequencies
    per_seed = counts @ v.T / n  # [B, S]: each seed's accuracy on the resampled images
    boots = (per_seed * w_seed).sum(axis=1) * 100.0  # [B]
    lo, hi = np.quantile(boots, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "se": float(boots.std(ddof=1))}


def minimum_detectable_effect(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true effect a two-sided test at level `alpha` detects with probability `power`, for an
    estimate with standard error `se` (normal approximation: (z_{1-alpha/2} + z_power) · se, 2.80 · se at
    0.05 and 80 %)."""
    from scipy.stats import norm

    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def seed_tests(deltas: list[float]) -> dict[str, float]:
    """Seed-level tests of per-seed paired differences: the paired t-test (= one-sample t-test of the
    differences against 0) and the exact two-sided sign test; NaN where undefined (one seed, all equal)."""
    from scipy.stats import binomtest, ttest_1samp

    d = np.asarray(deltas, dtype=np.float64)
    t_p = float(ttest_1samp(d, 0.0).pvalue) if len(d) > 1 and np.ptp(d) > 0 else float("nan")
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    sign_p = float(binomtest(pos, pos + neg, 0.5).pvalue) if pos + neg else float("nan")
    return {"t_p": t_p, "sign_p": sign_p, "n_pos": pos, "n_neg": neg}


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p from the discordant counts (binomial on a_only of a_only + b_only at 1/2)."""
    from scipy.stats import binomtest

    return 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
