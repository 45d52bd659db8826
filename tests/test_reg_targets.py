"""J_reg's target (`train.reg_target`, lmmreg.reg_targets): each control on a hand-built case with a known answer,
the default bit-identical to the paper's method, and a change re-training LMM-Reg. alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmmreg.artifacts import Artifact
from lmmreg.config import ConfigError, TrainConfig, parse_params
from lmmreg.identity import identity_parts
from lmmreg.methods import METHODS
from lmmreg.methods.base import MethodInputs, run_method
from lmmreg.random_text import random_words
from lmmreg.reg_targets import TARGETS, build_target, derangement
from tests.conftest import small_raw_params

CLASSES = ["cat", "dog", "owl"]


class Scale(torch.nn.Module):
    """A frozen tail x = 2 f: the image embeddings where J_reg acts are known by hand."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return 2 * f


def _inputs() -> MethodInputs:
    train_y = torch.tensor([0, 0, 1, 1, 2, 2])
    train_feat = torch.tensor([[1., 0], [3, 0], [0, 1], [0, 3], [1, 1], [3, 3]])
    return MethodInputs(tail=Scale(), train_feat=train_feat, test_feat=train_feat[:3], train_y=train_y,
                        test_y=train_y[:3], centroids=torch.tensor([[1., 0], [0, 1], [.6, .8]]),
                        class_text=torch.tensor([[0., 1], [1, 0], [.8, .6]]), train_text_mean=torch.zeros(6, 2),
                        test_text_mean=torch.zeros(3, 2))


def test_each_target_on_a_hand_built_case():
    inp, ids = _inputs(), [f"i{k}" for k in range(6)]
    assert build_target("lmm", inp, train_ids=ids, classes=CLASSES) is inp.centroids  # the very tensor: same bits
    assert torch.equal(build_target("class_prompt", inp, train_ids=ids, classes=CLASSES), inp.class_text)
    # image_mean: the class means of the frozen embeddings 2 f: (4, 0), (0, 4), (4, 4)
    assert torch.equal(build_target("image_mean", inp, train_ids=ids, classes=CLASSES),
                       torch.tensor([[4., 0], [0, 4], [4, 4]]))
    shuffled = build_target("shuffled", inp, train_ids=ids, classes=CLASSES)
    perm = derangement(3)
    assert torch.equal(shuffled, inp.centroids[perm]) and not (perm == torch.arange(3)).any()
    assert sorted(perm.tolist()) == [0, 1, 2] and torch.equal(derangement(3), perm)  # fixed, a permutation
    # random_text: Eq. 1 over the random-word rows of the run's own training images (i0..i5; i9 is not one)
    rows = [f"{i}#{j}" for i in (*ids, "i9") for j in range(2)]
    emb = torch.arange(len(rows) * 2, dtype=torch.float32).reshape(-1, 2)
    labels = torch.tensor([y for y in [0, 0, 1, 1, 2, 2, 0] for _ in range(2)])
    fake = Artifact(rows, labels, {"emb": emb}, {})
    got = build_target("random_text", inp, train_ids=ids, classes=CLASSES, random_text=fake)
    want = torch.stack([emb[:12][labels[:12] == c].mean(0) for c in range(3)])  # rows of i9 (class 0) left out
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="random_text.pt"):
        build_target("random_text", inp, train_ids=ids, classes=CLASSES)


def test_random_words_match_the_word_counts_and_are_seeded():
    vocab = ["alpha", "beta", "gamma", "delta"]
    texts = random_words([3, 1, 5], vocab, seed=0)
    assert [len(t.split()) for t in texts] == [3, 1, 5] and all(w in vocab for t in texts for w in t.split())
    assert random_words([3, 1, 5], vocab, seed=0) == texts and random_words([3, 1, 5], vocab, seed=1) != texts


def test_the_default_target_is_the_papers_method_bit_for_bit():
    inp, cfg = _inputs(), TrainConfig(epochs=2, batch_size=4)
    plain = run_method("lmm_reg", inp, alpha=0.5, cfg=cfg, seed=0)
    explicit = run_method("lmm_reg", dataclasses.replace(inp, reg_target=inp.centroids), alpha=0.5, cfg=cfg, seed=0)
    other = run_method("lmm_reg", dataclasses.replace(inp, reg_target=inp.class_text), alpha=0.5, cfg=cfg, seed=0)
    assert plain.history == explicit.history
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict.values(), explicit.state_dict.values(), strict=True))
    assert other.history != plain.history  # the target reaches the loss
    # finetune (α = 0) trains the same bits whatever the target (its logged train_reg is a diagnostic distance;
    # the train stage gives finetune no target, so that stays the distance to the LMM centroids)
    a = run_method("finetune", inp, alpha=0.5, cfg=cfg, seed=0)
    b = run_method("finetune", dataclasses.replace(inp, reg_target=inp.class_text), alpha=0.5, cfg=cfg, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict.values(), b.state_dict.values(), strict=True))
    assert [r["test_acc"] for r in a.history] == [r["test_acc"] for r in b.history]


def test_a_target_change_reaches_lmm_reg_alone():
    base = parse_params(small_raw_params())
    assert base.train.reg_target == "lmm"
    for target in TARGETS[1:]:
        other = parse_params(small_raw_params(**{"train.reg_target": target}))
        changed = {m for m in METHODS if identity_parts(base, dataset="demo", method=m, data_digest="d")
                   != identity_parts(other, dataset="demo", method=m, data_digest="d")}
        assert changed == {"lmm_reg"}, (target, changed)
    # the default adds nothing to the identity: runs of the paper's method from before the controls keep their id
    assert "reg_target" not in identity_parts(base, dataset="demo", method="lmm_reg", data_digest="d")["train"]
    with pytest.raises(ConfigError, match="train.reg_target"):
        parse_params(small_raw_params(**{"train.reg_target": "nope"}))
