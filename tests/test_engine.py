import dataclasses

import pytest
import torch
from torch import nn

from lmmreg.config import TrainConfig
from lmmreg.encoders import EmbeddingClassifier
from lmmreg.engine import fit


def _data(n=96, d=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y, centers


def _model(d=8, c=3):
    return EmbeddingClassifier(nn.Linear(d, d), d, c)


@pytest.mark.parametrize("report_epoch", ["last", "best"])
def test_fit_history_and_reported_epoch(report_epoch):
    x, y, cents = _data()
    cfg = TrainConfig(epochs=8, batch_size=16, lr=1e-2, report_epoch=report_epoch)
    torch.manual_seed(0)
    res = fit(_model(), train_x=x[:64], train_y=y[:64], test_x=x[64:], test_y=y[64:], centroids=cents,
              alpha=0.01, cfg=cfg, seed=0)
    assert [h["epoch"] for h in res.history] == list(range(1, 9))
    accs = [h["test_acc"] for h in res.history]
    if report_epoch == "last":
        assert res.reported_epoch == 8 and res.final.acc == accs[-1]
    else:
        assert res.final.acc == max(accs) and accs[res.reported_epoch - 1] == max(accs)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.final.acc > 60  # well-separated clusters are learnt
    assert res.final.emb.shape == (32, 8)


def test_fit_is_deterministic_per_seed_and_varies_across_seeds():
    x, y, cents = _data()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2)

    def run(seed):
        torch.manual_seed(seed)
        return fit(_model(), train_x=x[:64], train_y=y[:64], test_x=x[64:], test_y=y[64:], centroids=cents,
                   alpha=0.1, cfg=cfg, seed=seed).history

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_regulariser_pulls_embeddings_to_centroids():
    x, y, cents = _data()
    cfg = TrainConfig(epochs=20, batch_size=16, lr=1e-2, reg_reduction="mean")
    dists = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        res = fit(_model(), train_x=x[:64], train_y=y[:64], test_x=x[64:], test_y=y[64:], centroids=cents,
                  alpha=alpha, cfg=cfg, seed=0)
        dists[alpha] = (res.final.emb - cents[y[64:]]).pow(2).sum(-1).mean().item()
    assert dists[1.0] < 0.5 * dists[0.0]


def test_sgd_option_is_used():
    x, y, cents = _data()
    cfg = dataclasses.replace(TrainConfig(epochs=2, batch_size=16, lr=1e-2), optimizer="sgd")
    res = fit(_model(), train_x=x[:64], train_y=y[:64], test_x=x[64:], test_y=y[64:], centroids=None,
              alpha=0.0, cfg=cfg, seed=0)
    assert len(res.history) == 2
