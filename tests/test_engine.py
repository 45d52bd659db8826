import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.config import TrainConfig
from lmmreg.engine import fit
from lmmreg.heads import EmbeddingClassifier


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


def test_sgd_option_takes_sgd_steps_with_its_momentum_and_weight_decay():
    x, y, _ = _data()
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=0.01)
    torch.manual_seed(0)
    start = _model()

    def trained(c: TrainConfig) -> dict:
        return fit(copy.deepcopy(start), train_x=x[:64], train_y=y[:64], test_x=x[64:], test_y=y[64:],
                   centroids=None, alpha=0.0, cfg=c, seed=0).state_dict

    sgd = trained(cfg)
    # Two full-batch steps by hand, torch.optim.SGD's update: g = grad + wd p; b = g, then b = momentum b + g;
    # p -= lr b. Each epoch shuffles the rows of the one batch, which moves only float rounding.
    hand = copy.deepcopy(start)
    bufs: dict[str, torch.Tensor] = {}
    for _ in range(2):
        hand.zero_grad()
        F.cross_entropy(hand(x[:64])[1], y[:64]).backward()
        with torch.no_grad():
            for k, p in hand.named_parameters():
                g = p.grad + cfg.weight_decay * p
                bufs[k] = cfg.momentum * bufs[k] + g if k in bufs else g.clone()
                p -= cfg.lr * bufs[k]
    for k, v in hand.state_dict().items():
        assert torch.allclose(sgd[k], v, atol=1e-5), k
    no_momentum = dataclasses.replace(cfg, momentum=0.0)
    assert not all(torch.allclose(trained(no_momentum)[k], sgd[k], atol=1e-4) for k in sgd)
    adam = trained(dataclasses.replace(cfg, optimizer="adam"))
    assert not all(torch.allclose(adam[k], sgd[k], atol=1e-4) for k in sgd)


def test_fit_draws_one_cached_view_per_image_and_epoch():
    x, y, cents = _data()
    # View 0 is the clean input; view 1 is useless noise. Drawing views must still learn from the clean half.
    views = torch.stack([x[:64], torch.randn(64, 8) * 10], dim=1)  # [N, V=2, D]
    cfg = TrainConfig(epochs=10, batch_size=16, lr=1e-2)
    torch.manual_seed(0)
    res = fit(_model(), train_x=views, train_y=y[:64], test_x=x[64:], test_y=y[64:], centroids=cents,
              alpha=0.0, cfg=cfg, seed=0, views=True)
    assert len(res.history) == 10 and res.final.acc > 50


def test_every_trained_method_accepts_augmented_views():
    from lmmreg.methods.base import MethodInputs, run_method

    g = torch.Generator().manual_seed(0)
    w, d, c = 6, 4, 3
    tail = nn.Linear(w, d, bias=False)
    inp = MethodInputs(tail=tail, train_feat=torch.randn(12, w, generator=g), test_feat=torch.randn(6, w, generator=g),
                       train_y=torch.arange(12) % c, test_y=torch.arange(6) % c, centroids=torch.randn(c, d),
                       class_text=torch.randn(c, d), train_text_mean=torch.randn(12, d),
                       test_text_mean=torch.randn(6, d),
                       train_aug=torch.randn(12, 2, w, generator=g))
    assert inp.train_views().shape == (12, 3, w)
    cfg = TrainConfig(epochs=2, batch_size=4)
    for method in ("linear_probe", "concat", "finetune", "lmm_reg"):
        res = run_method(method, inp, alpha=0.1, cfg=cfg, seed=0)
        assert len(res.history) == 2 and res.final.preds.shape == (6,)
