"""Statistics the paper lacks: seeds, two-level bootstrap intervals, McNemar's test (per seed, and clustered by
image over seeds), the variance components of a seeds × images design with their t-test and minimum detectable
effect, seed-level tests, Holm's correction, per-class deltas, compactness. docs/intervals.md says what each one
resamples and how to read it."""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np


def silhouette(emb: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> float:
    """sklearn's `silhouette_score` (Euclidean), computed as per-class sums of distances (a matmul with the
    one-hot labels) over row chunks: the same float64 formula, faster, and it never holds the test images'
    distance matrix whole. Each chunk is computed in one reused buffer, in place, in the order
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


def minimum_detectable_effect(se: float, *, df: float = math.inf, level: float = 0.05, power: float = 0.8) -> float:
    """The true effect a two-sided t-test at significance `level` on `df` degrees of freedom detects with probability
    `power`, for an estimate with standard error `se`: (t_{df, 1-level/2} + t_{df, power}) · se (Bloom 1995). It
    is the effect found with 80 % power, not a floor: smaller effects are found less often, not never. Normal
    multipliers at df = inf (2.80 · se at 0.05 and 80 %); 3.35 · se at 6 df."""
    from scipy.stats import t

    if not math.isfinite(se):
        return float("nan")
    if not df > 0:
        return float("nan")
    return float((t.ppf(1 - level / 2, df) + t.ppf(power, df)) * se)


def variance_components(values: np.ndarray) -> dict:
    """The mean of `values` [..., S, N] (S seeds crossed with N test images, one observation per cell: 0/1
    correctness or a paired difference of two) in points, with the variance components of the design, the
    standard error of the mean and its Satterthwaite degrees of freedom; floats for one [S, N] matrix, arrays of
    the leading shape for a stack of them.

    Two-way random-effects ANOVA (method of moments): with mean squares MS_seed (S−1 df), MS_image (N−1 df) and
    MS_resid ((S−1)(N−1) df), σ²_seed = (MS_seed − MS_resid)/N, σ²_image = (MS_image − MS_resid)/S and
    σ²_inter = MS_resid (seed × image interaction and noise), a negative estimate set to 0. The variance of the
    mean, σ²_seed/S + σ²_image/N + σ²_inter/(S·N), is a linear combination Σ c_k MS_k of the mean squares, and its
    Satterthwaite (1946) degrees of freedom are (Σ c_k MS_k)² / Σ (c_k MS_k)²/df_k: near S − 1 where seeds
    dominate, near N − 1 where images do. `share_*` split the variance of the mean between the three. One seed:
    the seed component cannot be estimated and the error is the images' alone (N − 1 df). The mean squares are
    kept for `components_p`."""
    v = np.asarray(values, dtype=np.float64) * 100.0  # [..., S, N] in points
    s, n = v.shape[-2:]
    grand = v.mean(axis=(-2, -1))  # [...]
    col = v.mean(axis=-2)  # [..., N] each image's mean over seeds
    ms_image = s * ((col - grand[..., None]) ** 2).sum(axis=-1) / max(n - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if s > 1:
            row = v.mean(axis=-1)  # [..., S] each seed's mean over images
            ms_seed = n * ((row - grand[..., None]) ** 2).sum(axis=-1) / (s - 1)
            resid = v - row[..., :, None] - col[..., None, :] + grand[..., None, None]  # [..., S, N]
            df_resid = (s - 1) * (n - 1)
            ms_resid = (resid ** 2).sum(axis=(-2, -1)) / max(df_resid, 1)
            keep_seed, keep_image = ms_seed > ms_resid, ms_image > ms_resid  # a negative component is set to 0
            terms = ((keep_seed * ms_seed / (s * n), s - 1), (keep_image * ms_image / (s * n), n - 1),
                     ((1.0 - keep_seed - keep_image) * ms_resid / (s * n), df_resid))  # (c_k · MS_k, df_k)
            parts = {"var_seed": np.where(keep_seed, (ms_seed - ms_resid) / n, 0.0),
                     "var_image": np.where(keep_image, (ms_image - ms_resid) / s, 0.0), "var_inter": ms_resid}
        else:
            ms_seed = ms_resid = np.full_like(grand, np.nan)
            terms = ((ms_image / n, n - 1),)
            parts = {"var_seed": ms_seed, "var_image": ms_image, "var_inter": ms_resid}
        var = sum(c for c, _ in terms)
        df = var ** 2 / sum(c ** 2 / d for c, d in terms)
        out = {"mean": grand, "se": np.sqrt(var), "df": np.where(var > 0, df, np.nan), **parts,
               "share_seed": parts["var_seed"] / s / var, "share_image": parts["var_image"] / n / var,
               "share_inter": parts["var_inter"] / (s * n) / var,
               "ms_seed": ms_seed, "ms_image": ms_image, "ms_resid": ms_resid}
    if n < 2:
        out = {k: np.full_like(grand, np.nan) if k != "mean" else grand for k in out}
    out |= {"s": s, "n": n}
    return {k: float(x) if np.ndim(x) == 0 and k not in ("s", "n") else x for k, x in out.items()}


_LOG_U = np.arange(-80.0, 7.6, 0.2)  # log of the χ² variable: a trapezoid grid, exact to ~3e-9 relative


def _mixture_logsf(x: np.ndarray, vc: dict) -> np.ndarray:
    """log P(Z · τ(U) > x), Z ~ N(0, 1), U ~ χ²_{S−1}: the generalized pivot of the mean's error (see
    `components_p`), τ²(U) = max(MS_seed·(S−1)/U − MS_resid, 0)/(S·N) + max(MS_image, MS_resid)/(S·N)."""
    from scipy.special import gammainc, gammaln, log_ndtr

    s, n = vc["s"], vc["n"]
    k = s - 1
    shape = np.shape(x)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    a, e, b = (np.broadcast_to(np.asarray(vc[m], dtype=np.float64), x.shape).reshape(-1, 1) / (s * n)
               for m in ("ms_seed", "ms_resid", "ms_image"))
    b = np.maximum(b, e)
    u = np.exp(_LOG_U)  # [G]
    log_w = (k / 2) * (_LOG_U - math.log(2)) - u / 2 - gammaln(k / 2) + math.log(_LOG_U[1] - _LOG_U[0])  # χ²_k · du
    log_w[[0, -1]] -= math.log(2)  # trapezoid ends
    below = math.log(gammainc(k / 2, u[0] / 2)) + math.log(0.5)  # U below the grid: τ huge, P(Z·τ > x) = 1/2
    out = np.empty(x.size)
    flat = x.reshape(-1, 1)
    for i in range(0, x.size, 2048):  # [chunk, G] at a time
        sl = slice(i, i + 2048)
        tau = np.sqrt(np.maximum(a[sl] * k / u - e[sl], 0.0) + b[sl])  # [chunk, G]
        with np.errstate(divide="ignore", invalid="ignore"):
            body = log_ndtr(-flat[sl] / tau) + log_w  # [chunk, G] log of each node's share
        top = np.maximum(body.max(axis=1), below)  # [chunk]: log-sum-exp with the mass below the grid
        out[sl] = top + np.log(np.exp(body - top[:, None]).sum(axis=1) + np.exp(below - top))
    return out.reshape(shape)


def components_p(vc: dict, null: float | np.ndarray = 0.0) -> float | np.ndarray:
    """Two-sided p of mean = `null` for `variance_components`' output: a generalized p-value (Tsui & Weerahandi
    1989) that carries the uncertainty of the seed component, estimated on S − 1 df, where the Satterthwaite
    t-test plugs the estimate in (and with 3 seeds gives p-values far too small in the tail a multiplicity
    correction uses: docs/intervals.md).

    The mean's error is N(0, τ²) with τ² = σ²_seed/S + σ²_image/N + σ²_inter/(S·N). The image and interaction
    terms are estimated on N − 1 and (S−1)(N−1) df and taken as known; the seed term's pivot is
    (MS_seed·(S−1)/U − MS_resid)/(S·N), U ~ χ²_{S−1}, set to 0 where negative; the p is P(|Z|·τ(U) ≥ |mean −
    null|) over Z and U. With no image variance it is the paired t-test of the seed means on S − 1 df; with no
    seed variance it tends to the z-test over images. One seed: the t-test over images on N − 1 df, a test of
    that run and not of a new seed."""
    from scipy.stats import t

    x = np.abs(np.asarray(vc["mean"], dtype=np.float64) - null)
    if vc["s"] == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2 * t.sf(x / vc["se"], vc["n"] - 1)
    else:
        p = np.minimum(1.0, 2 * np.exp(_mixture_logsf(x, vc)))
    p = np.where(x == 0, 1.0, np.where(np.asarray(vc["se"]) > 0, p, np.nan))
    return float(p) if np.ndim(p) == 0 else p


def components_interval(vc: dict, *, ci: float) -> tuple[float, float]:
    """The `ci` interval of the mean that `components_p` inverts: every value its test does not reject at 1 − ci."""
    half = _critical(vc, 1 - ci)
    return vc["mean"] - half, vc["mean"] + half


def _critical(vc: dict, level: float) -> float:
    """The half-width q with components_p(mean ± q) = level: bracketed on a grid of multiples of the standard
    error (one vectorised call), then solved."""
    from scipy.optimize import brentq

    se = vc["se"]
    if not (math.isfinite(se) and se > 0):
        return float("nan")
    if vc["s"] == 1:
        from scipy.stats import t

        return float(t.ppf(1 - level / 2, vc["n"] - 1) * se)
    grid = se * np.geomspace(0.5, 1e6, 64)  # [64]: the answer lies between z·se and t_1's 1e-6 point·se
    logp = _mixture_logsf(grid, vc) + math.log(2)
    i = int(np.searchsorted(-logp, -math.log(level)))  # first grid point with p ≤ level
    if i == 0 or i == len(grid):
        return float("nan")
    return float(brentq(lambda h: float(_mixture_logsf(h, vc)) + math.log(2) - math.log(level), grid[i - 1], grid[i],
                        xtol=1e-10 * se))


def components_test(values: np.ndarray, *, ci: float = 0.95, level: float = 0.05, power: float = 0.8) -> dict:
    """The verdict test of mean = 0 for a seeds × images matrix [S, N] (docs/intervals.md): `variance_components`,
    the generalized p (`components_p`) and the interval it inverts, and the minimum detectable effect.

    The MDE is a t multiplier at the design's effective degrees of freedom: ν* is the df of the t distribution
    whose two-sided `level` point is this test's (t_{ν*} · se = its critical half-width), so ν* counts what the
    seed component's S − 1 df cost (ν* = S − 1 where seeds dominate, large where they cannot matter), and
    MDE = (t_{ν*, 1−level/2} + t_{ν*, power}) · se (Bloom 1995). `satterthwaite_df` is the plug-in alternative,
    whose t-test is too liberal in the tail with 3 seeds."""
    from scipy.optimize import brentq
    from scipy.stats import norm, t

    vc = variance_components(values)
    half = _critical(vc, level)
    lo, hi = (vc["mean"] - half, vc["mean"] + half) if math.isclose(ci, 1 - level) else components_interval(vc, ci=ci)
    if not math.isfinite(half):
        nu = float("nan")
    elif half <= norm.ppf(1 - level / 2) * vc["se"] * (1 + 1e-9):
        nu = math.inf
    else:
        ratio = half / vc["se"]
        nu = float(math.exp(brentq(lambda g: t.ppf(1 - level / 2, math.exp(g)) - ratio, math.log(0.05),
                                   math.log(1e9))))
    return {"mean": vc["mean"], "se": vc["se"], "p": components_p(vc), "lo": lo, "hi": hi, "df": nu,
            "satterthwaite_df": vc["df"], "mde": minimum_detectable_effect(vc["se"], df=nu, level=level, power=power),
            "share_seed": vc["share_seed"], "share_image": vc["share_image"], "share_inter": vc["share_inter"]}


def clustered_mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's test with each test image's seeds kept together, for correctness matrices [S, N] of two methods on
    the same S seeds and N images: an exact sign-flip (permutation) test over images.

    Per image j, d_j = (seeds where only a is right) − (seeds where only b is right). Under the null that the two
    methods' labels are exchangeable within an image, each image's d_j keeps its size and takes either sign with
    probability 1/2, independently across images, whatever the seeds share on that image; the p is the exact
    probability, over those 2^N sign patterns, of a |Σ d_j| at least as large as observed (the distribution is a
    convolution of binomials, one per |d_j| = 1..S). With one seed it is the exact McNemar test; its large-sample
    form, (Σ d_j)² / Σ d_j² against χ²_1, is the clustered McNemar of Durkalski et al. (2003), returned as
    `chi2_p`. The pooled McNemar (`mcnemar` on the flattened matrices) counts an image S times as if its seeds were
    independent, which they are not, and its p is too small when the seeds disagree on the same images.

    The test is conditional on the trained runs: it asks whether these runs differ on the test population, not
    whether a new seed would; `variance_components` and `seed_tests` carry the seed variance."""
    from scipy.stats import binom, chi2

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    d = (a & ~b).sum(axis=0).astype(np.int64) - (~a & b).sum(axis=0)  # [N] per image, in −S..S
    observed = int(d.sum())
    sizes = np.bincount(np.abs(d), minlength=2)  # sizes[k] = images with |d_j| = k
    pmf = np.ones(1)  # distribution of U = Σ_k k·X_k, X_k ~ Bin(sizes[k], 1/2); Σ ε_j |d_j| = 2U − total
    for k in range(1, len(sizes)):
        if sizes[k]:
            spread = np.zeros(k * sizes[k] + 1)
            spread[::k] = binom.pmf(np.arange(sizes[k] + 1), sizes[k], 0.5)
            pmf = np.convolve(pmf, spread)
    total = int((np.arange(len(sizes)) * sizes).sum())
    extreme = np.abs(2 * np.arange(total + 1) - total) >= abs(observed)
    p = min(1.0, float(pmf[extreme].sum()))
    sq = float((d.astype(np.float64) ** 2).sum())
    return {"a_only": int((a & ~b).sum()), "b_only": int((~a & b).sum()), "net": observed,
            "p_value": 1.0 if observed == 0 else p, "chi2_p": float(chi2.sf(observed ** 2 / sq, 1)) if sq else 1.0}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values: family-wise error ≤ a level under any dependence between the tests
    when a test rejects at adjusted p < that level. NaN stays NaN and does not count in the family's size."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return [float(x) for x in out]


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
