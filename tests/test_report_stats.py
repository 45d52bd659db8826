"""The report's statistics on hand-built cases with known answers: the two-level bootstrap, the MDE, the
seed-level tests, and what the paper's tables can resolve (BAR: 5 images, p = 2·0.5^5)."""

from __future__ import annotations

import numpy as np
import pytest

from lmmreg.report.resolution import PAPER_TEST_SIZES, gain_in_images, p_at_rate, paper_test_size
from lmmreg.stats import bootstrap_ci, mcnemar_p, minimum_detectable_effect, seed_tests, two_level_bootstrap


def test_zero_seed_variance_gives_the_one_level_interval_over_images():
    rng = np.random.default_rng(0)
    row = rng.random(300) < 0.7  # [N] one seed's correctness
    same = np.tile(row, (5, 1))  # [5, N]: five seeds, identical
    two = two_level_bootstrap(same, n_boot=400, ci=0.95, seed=3)
    assert (two["lo"], two["hi"]) == pytest.approx(bootstrap_ci(row, n_boot=400, ci=0.95, seed=3), abs=1e-9)
    assert two["mean"] == pytest.approx(100 * row.mean())


def test_zero_test_variance_gives_the_seed_interval():
    acc = np.array([0.50, 0.55, 0.62, 0.70])  # each seed right on the same share of every image: no image variance
    flat = np.repeat(acc[:, None], 50, axis=1)  # [S, N], rows constant
    two = two_level_bootstrap(flat, n_boot=500, ci=0.9, seed=7)
    rng = np.random.default_rng(7)
    rng.integers(0, 50, size=(500, 50))  # the image draw comes first
    seeds = rng.integers(0, 4, size=(500, 4))
    expected = np.quantile(acc[seeds].mean(axis=1) * 100, [0.05, 0.95])
    assert (two["lo"], two["hi"]) == pytest.approx(tuple(expected))
    assert two["se"] == pytest.approx(float((acc[seeds].mean(axis=1) * 100).std(ddof=1)))


def test_both_sources_widen_the_interval_and_paired_differences_cancel_shared_noise():
    rng = np.random.default_rng(1)
    seed_shift = rng.normal(0, 0.1, size=(8, 1))
    correct = rng.random((8, 2000)) < 0.6 + seed_shift  # [S, N]
    two = two_level_bootstrap(correct, n_boot=300, ci=0.95)
    one = bootstrap_ci(correct.mean(axis=0), n_boot=300, ci=0.95)
    assert two["hi"] - two["lo"] > one[1] - one[0]  # seed variance is now in the interval
    same = two_level_bootstrap(correct.astype(float) - correct, n_boot=300, ci=0.95)
    assert same["mean"] == 0 and same["lo"] == 0 and same["hi"] == 0 and same["se"] == 0  # exact


def test_two_level_bootstrap_is_cheap_at_the_demo_sizes():
    import time

    correct = np.random.default_rng(2).random((8, 4000)) < 0.8
    t = time.perf_counter()
    two_level_bootstrap(correct, n_boot=1000, ci=0.95)
    assert time.perf_counter() - t < 5.0  # about 0.1 s unloaded; 8 seeds x 4,000 images x 1,000 resamples


def test_mde_and_seed_level_tests():
    assert minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    t = seed_tests([1.0, 2.0, 3.0])
    from scipy.stats import ttest_1samp

    assert t["t_p"] == pytest.approx(ttest_1samp([1.0, 2.0, 3.0], 0).pvalue)
    assert t["sign_p"] == pytest.approx(0.25) and (t["n_pos"], t["n_neg"]) == (3, 0)
    one = seed_tests([2.0])
    assert np.isnan(one["t_p"]) and one["sign_p"] == pytest.approx(1.0)


def test_bar_known_answer_five_images_all_favouring_lmm_reg():
    n = paper_test_size(None, "bar")
    delta, k = gain_in_images("bar", n)
    assert n == 654 and k == 5 and delta == pytest.approx(0.765)
    assert p_at_rate(k, n, None) == (5, pytest.approx(2 * 0.5 ** 5))
    assert mcnemar_p(5, 0) == pytest.approx(0.0625)


def test_paper_resolution_matches_the_issue_context():
    """UCF-101: 24 images, ERA 14, BAR 5; at 3-4 % discordance p ≈ 0.03-0.07, 0.04-0.09, 0.38-0.46."""
    for ds, k, lo, hi in (("ucf101", 24, 0.02, 0.08), ("era", 14, 0.03, 0.10), ("bar", 5, 0.35, 0.50)):
        n = PAPER_TEST_SIZES[ds]
        assert gain_in_images(ds, n)[1] == k
        for rate in (0.03, 0.04):
            disc, p = p_at_rate(k, n, rate)
            assert (disc - k) % 2 == 0 and lo <= p <= hi, (ds, rate, disc, p)


def test_params_test_sizes_agree_with_the_paper(small_params):
    for ds, n in PAPER_TEST_SIZES.items():
        assert paper_test_size(small_params, ds) == n


def test_silhouette_is_sklearns():
    """lmmreg.stats.silhouette (chunked, per-class sums by matmul) against sklearn's silhouette_score, with a
    class of one sample (scores 0) and chunks that split the rows unevenly."""
    from sklearn.metrics import silhouette_score

    from lmmreg.stats import silhouette

    rng = np.random.default_rng(0)
    for n, k, chunk in ((300, 4, 64), (301, 3, 1024), (9, 3, 2)):
        y = rng.integers(0, k, n)
        y[0] = k  # alone in its class
        x = (rng.normal(size=(n, 16)) + y[:, None]).astype(np.float32)
        assert silhouette(x, y, chunk=chunk) == pytest.approx(silhouette_score(x, y), abs=1e-6)


def _silhouette_out_of_place(emb, labels, chunk):
    """The formula as first written (a new array per operation): the in-place version must give its bits."""
    x = np.asarray(emb, dtype=np.float64)
    classes, pos = np.unique(labels, return_inverse=True)
    n, k = len(x), len(classes)
    counts = np.bincount(pos, minlength=k)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), pos] = 1.0
    sq = np.einsum("ij,ij->i", x, x)
    sums = np.empty((n, k))
    for i in range(0, n, chunk):
        rows = slice(i, min(i + chunk, n))
        d2 = sq[rows, None] - 2.0 * (x[rows] @ x.T) + sq[None, :]
        np.maximum(d2, 0.0, out=d2)
        d = np.sqrt(d2, out=d2)
        d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)] = 0.0
        sums[rows] = d @ onehot
    own = counts[pos]
    a = sums[np.arange(n), pos] / np.maximum(own - 1, 1)
    other = sums / counts[None, :]
    other[np.arange(n), pos] = np.inf
    b = other.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    s[own == 1] = 0.0
    return float(np.mean(np.nan_to_num(s)))


def test_silhouette_in_place_keeps_the_bits_and_computes_each_matrix_once(monkeypatch):
    """The in-place chunks give exactly the out-of-place formula's float (same seeds' metrics as before), and a
    matrix seen before (every seed of a frozen-feature method) is not computed again; other labels are."""
    from lmmreg import stats

    rng = np.random.default_rng(1)
    for trial in range(12):
        n, d, k = int(rng.integers(5, 600)), int(rng.integers(1, 40)), int(rng.integers(2, 9))
        x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 20)).astype(np.float32)
        y = rng.integers(0, k, n)
        y[:2] = [0, 1]
        for chunk in (1024, 64):
            assert stats.silhouette(x, y, chunk=chunk) == _silhouette_out_of_place(x, y, chunk), (trial, chunk)

    calls = []
    real = stats._silhouette
    monkeypatch.setattr(stats, "_silhouette", lambda *a: calls.append(1) or real(*a))
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    first = stats.silhouette(x, y)
    assert stats.silhouette(x.copy(), y.copy()) == first and len(calls) == 1  # same content: remembered
    other = stats.silhouette(x, rng.integers(0, 3, 200))
    assert len(calls) == 2 and other != first  # other labels: computed
