import torch
import torch.nn.functional as F

from lmmreg.losses import lmm_reg_loss


def _batch(seed=0, b=6, d=5, c=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, generator=g), torch.randn(b, d, generator=g), torch.randint(0, c, (b,), generator=g),
            torch.randn(c, d, generator=g))


def test_alpha_zero_is_plain_cross_entropy():
    logits, emb, y, cents = _batch()
    out = lmm_reg_loss(logits, emb, y, cents, alpha=0.0)
    assert torch.allclose(out["loss"], F.cross_entropy(logits, y))
    assert out["reg"] > 0  # still reported for the baseline


def test_reg_is_the_squared_distance_to_the_own_centroid():
    logits, emb, y, cents = _batch()
    expected = sum(((emb[i] - cents[y[i]]) ** 2).sum() for i in range(len(y)))
    out = lmm_reg_loss(logits, emb, y, cents, alpha=0.5, reduction="sum")
    assert torch.allclose(out["reg"], expected)
    assert torch.allclose(out["loss"], out["ce"] + 0.5 * expected)
    mean = lmm_reg_loss(logits, emb, y, cents, alpha=0.5, reduction="mean")
    assert torch.allclose(mean["reg"], expected / len(y))


def test_normalize_bounds_the_distance():
    logits, emb, y, cents = _batch()
    out = lmm_reg_loss(logits, emb * 100, y, cents, alpha=1.0, reduction="mean", normalize=True)
    assert 0 <= out["reg"] <= 4.0  # squared distance of unit vectors


def test_gradient_pulls_embeddings_towards_centroids():
    logits, emb, y, cents = _batch()
    emb = emb.clone().requires_grad_(True)
    lmm_reg_loss(logits, emb, y, cents, alpha=1.0)["loss"].backward()
    assert torch.allclose(emb.grad, 2 * (emb - cents[y]).detach())
