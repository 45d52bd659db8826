"""The method registry and the field's baselines: one known-answer test per method, the validation split, and
the rule that nothing is chosen on test."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.clip.build import build_clip
from lmmreg.clip.text import embed_texts
from lmmreg.clip.vision import VisionTail
from lmmreg.config import (
    BaselinesConfig,
    CLAPConfig,
    ClipAdapterConfig,
    ClipConfig,
    CoOpConfig,
    CrossModalConfig,
    LPPlusPlusConfig,
    ProLIPConfig,
    TipAdapterConfig,
    TrainConfig,
    parse_params,
)
from lmmreg.engine import cosine_schedule
from lmmreg.heads import CosineHead
from lmmreg.methods import METHODS, get_method
from lmmreg.methods.base import MethodInputs, RunContext, run_method
from lmmreg.validation import holdout_split
from tests.conftest import small_raw_params

NAMES = ["circle", "square", "star", "ring"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    model, _, tokenizer = build_clip(ClipConfig())
    return model, tokenizer


def _inputs(clip, *, n_train=64, n_test=32, aug: int = 0, seed=0) -> MethodInputs:
    """Separable clusters in the cache space of the tiny CLIP; class texts embedded from real prompts."""
    model, tokenizer = clip
    g = torch.Generator().manual_seed(seed)
    width, c = model.visual.proj.shape[0], len(NAMES)
    centers = torch.randn(c, width, generator=g) * 3
    ytr, yte = torch.arange(n_train) % c, torch.arange(n_test) % c
    ftr = centers[ytr] + torch.randn(n_train, width, generator=g)
    fte = centers[yte] + torch.randn(n_test, width, generator=g)
    text = embed_texts(model, tokenizer, [f"a photo of a {n}." for n in NAMES], progress=False).emb
    d = text.shape[1]
    return MethodInputs(tail=VisionTail(model.visual, 1), train_feat=ftr, test_feat=fte, train_y=ytr, test_y=yte,
                        centroids=torch.randn(c, d, generator=g), class_text=text,
                        train_text_mean=torch.randn(n_train, d, generator=g),
                        test_text_mean=torch.randn(n_test, d, generator=g),
                        train_aug=(ftr[:, None] + 0.1 * torch.randn(n_train, aug, width, generator=g)) if aug else None,
                        classnames=NAMES, clip_model=model, tokenizer=tokenizer,
                        logit_scale=model.logit_scale.exp().item())


def _ctx(baselines: BaselinesConfig | None = None, seed: int = 0) -> RunContext:
    return RunContext(alpha=0.01, cfg=TrainConfig(epochs=2, batch_size=16), baselines=baselines or BaselinesConfig(),
                      seed=seed)


def _zero_shot_cos(inp: MethodInputs, feat: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return CosineHead(inp.class_text)(inp.tail(feat))  # [N, C] cosine similarities


FAST = BaselinesConfig(prolip=ProLIPConfig(steps=5, lr_grid=[1.0e-3, 1.0e-5], reg_grid=[1.0, 0.0]),
                       tip_adapter=TipAdapterConfig(epochs=2, beta_steps=5, alpha_steps=5),
                       clip_adapter=ClipAdapterConfig(epochs=2), coop=CoOpConfig(epochs=2, n_ctx=4),
                       lp_pp=LPPlusPlusConfig(epochs=5), clap=CLAPConfig(epochs=2),
                       cross_modal=CrossModalConfig(iters=20, eval_every=5, lr_grid=[1.0e-3], weight_decay_grid=[0.0]))


# ------------------------------------------------------------------ the registry


def test_registry_is_the_one_list_of_methods():
    import dataclasses

    from lmmreg.config import ConfigError

    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")
    from lmmreg.methods.registry import check_methods

    with pytest.raises(ConfigError, match="train.methods: unknown method 'nope'"):
        check_methods(parse_params(small_raw_params(**{"train.methods": ["lmm_reg", "nope"]})).train.methods)
    assert parse_params(small_raw_params(**{"train.methods": list(METHODS)})).train.methods == list(METHODS)
    from lmmreg.methods.registry import INPUTS  # the declared inputs are MethodInputs' fields, no more, no less
    assert INPUTS == {f.name for f in dataclasses.fields(MethodInputs)}
    for spec in METHODS.values():
        assert callable(spec.load())  # every entry names a function that exists


def test_every_declared_setting_exists_in_params():
    params = parse_params(small_raw_params())
    for spec in METHODS.values():
        for dotted in spec.settings:
            node = params
            for part in dotted.split("."):
                node = getattr(node, part)  # AttributeError = a typo in a registration


def test_identity_follows_the_registry_declarations():
    from lmmreg.identity import method_alpha, run_identity

    base = parse_params(small_raw_params())
    other = parse_params(small_raw_params(**{"baselines.gda.alpha_grid": [1.0]}))
    prompt = parse_params(small_raw_params(**{"clip.class_prompt": "a picture of {}."}))

    def cid(params, method):
        return run_identity(params, dataset="demo", method=method, data_digest="d")["config_id"]

    assert cid(base, "gda") != cid(other, "gda") and cid(base, "finetune") == cid(other, "finetune")
    assert cid(base, "gda") != cid(prompt, "gda")  # gda reads the class-prompt embeddings
    assert cid(base, "linear_probe_lbfgs") == cid(prompt, "linear_probe_lbfgs")
    assert get_method("coop").uses_lmm is False and get_method("concat").uses_lmm is True
    assert method_alpha("lmm_reg", 0.3) == 0.3 and method_alpha("finetune", 0.3) == 0.0
    assert method_alpha("prolip", 0.3) is None


def test_a_method_missing_an_input_fails_naming_it(clip):
    inp = dataclasses.replace(_inputs(clip), clip_model=None)
    with pytest.raises(ValueError, match="'coop' needs clip_model"):
        run_method("coop", inp, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=FAST)


@pytest.mark.parametrize("aug", [0, 2])
def test_every_method_runs_and_predicts_every_test_image(clip, aug):
    inp = _inputs(clip, n_train=32, n_test=12, aug=aug)
    inp = dataclasses.replace(inp, train_desc=inp.train_text_mean[:, None] + torch.randn(32, 3, 1))  # cross_modal_lmm
    for method in sorted(METHODS):
        res = run_method(method, inp, alpha=0.1, cfg=TrainConfig(epochs=2, batch_size=8), seed=0, baselines=FAST)
        assert res.final.preds.shape == (12,) and 0 <= res.final.acc <= 100, method
        assert all(math.isfinite(v) for v in res.chosen.values()), method


# ------------------------------------------------------------------ validation split


def test_holdout_split_is_stratified_disjoint_and_seeded():
    y = torch.arange(50) % 5  # 10 per class
    fit, val = holdout_split(y, seed=3, val_fraction=0.2)
    assert len(set(fit.tolist()) & set(val.tolist())) == 0 and len(fit) + len(val) == 50
    assert torch.bincount(y[val]).tolist() == [2] * 5
    assert torch.equal(val, holdout_split(y, seed=3, val_fraction=0.2)[1])
    assert not torch.equal(val, holdout_split(y, seed=4, val_fraction=0.2)[1])
    y = torch.tensor([0, 0, 0, 1])  # class 1 has one image: it stays for fitting
    fit, val = holdout_split(y, seed=0, val_fraction=0.3)
    assert 3 in fit.tolist() and y[val].tolist() == [0]
    with pytest.raises(ValueError, match="nothing to hold out"):
        holdout_split(torch.tensor([0, 1, 2]), seed=0)


def test_holdout_split_with_shots_follows_coops_rule():
    y = torch.arange(100) % 4  # 25 per class
    for k in (1, 2, 4, 8, 16):
        fit, val = holdout_split(y, seed=0, shots=k)
        assert torch.bincount(y[fit]).tolist() == [k] * 4
        assert torch.bincount(y[val]).tolist() == [min(k, 4)] * 4
        assert not set(fit.tolist()) & set(val.tolist())
    chosen = torch.tensor([0, 1, 2, 3])  # one shot per class, chosen elsewhere (train.shots)
    fit, val = holdout_split(y, seed=0, shots=1, train_idx=chosen)
    assert fit.tolist() == [0, 1, 2, 3] and torch.bincount(y[val]).tolist() == [1] * 4
    with pytest.raises(ValueError, match="class 0 has 25 training images; 24 shots plus 4"):
        holdout_split(y, seed=0, shots=24)


def test_search_split_follows_baselines_val_rule():
    from lmmreg.methods.base import search_split

    y = torch.arange(40) % 4
    inp = MethodInputs(tail=nn.Identity(), train_feat=torch.randn(40, 3), test_feat=torch.zeros(1, 3), train_y=y,
                       test_y=torch.zeros(1, dtype=torch.long), centroids=torch.zeros(4, 3),
                       class_text=torch.zeros(4, 3), train_text_mean=torch.zeros(40, 3),
                       test_text_mean=torch.zeros(1, 3), val_feat=torch.randn(8, 3), val_y=torch.arange(8) % 4)
    outside = search_split(inp, _ctx(BaselinesConfig(val_rule="outside_shots")))
    assert outside.val_idx is None and torch.equal(outside.fit_idx, torch.arange(40))  # fit on every shot
    val_x, val_y = outside.val(inp, inp.train_feat * 2, lambda f: f * 2)  # in the method's own form
    assert torch.equal(val_x, inp.val_feat * 2) and torch.equal(val_y, inp.val_y)
    cut = search_split(inp, _ctx(BaselinesConfig(val_rule="from_shots")))
    assert torch.equal(cut.val_idx, holdout_split(y, seed=0, val_fraction=0.2)[1])
    val_x, val_y = cut.val(inp, inp.train_feat, lambda f: f)
    assert torch.equal(val_x, inp.train_feat[cut.val_idx]) and torch.equal(val_y, y[cut.val_idx])
    full = dataclasses.replace(inp, val_feat=None, val_y=None)  # shots: all: the val_fraction split either way
    assert torch.equal(search_split(full, _ctx()).val_idx, cut.val_idx)
    assert search_split(dataclasses.replace(inp, val_feat=inp.val_feat[:0], val_y=inp.val_y[:0]), _ctx()) is None


@pytest.mark.parametrize("method", ["prolip", "gda", "tip_adapter", "tip_adapter_f", "linear_probe_lbfgs"])
def test_searches_use_the_validation_images_outside_the_shots(clip, method, monkeypatch):
    """outside_shots: the search never cuts a split from the shots; from_shots: the images outside are never read."""
    import lmmreg.methods.base as base

    inp = _inputs(clip, n_train=16)  # 4 shots per class
    extra = _inputs(clip, n_train=8, seed=1)
    with_val = dataclasses.replace(inp, val_feat=extra.train_feat, val_y=extra.train_y)
    cut = dataclasses.replace(FAST, val_rule="from_shots")
    a = run_method(method, with_val, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=cut)
    b = run_method(method, inp, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=cut)
    assert a.chosen == b.chosen and a.final.acc == b.final.acc

    def no_cut(*args, **kwargs):
        raise AssertionError("outside_shots cut a validation split from the shots")

    monkeypatch.setattr(base, "holdout_split", no_cut)
    res = run_method(method, with_val, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=FAST)
    assert set(res.chosen) == set(b.chosen)


def test_logit_scale_param_sets_the_zero_shot_scale(clip):
    from lmmreg.methods.base import zero_shot_scale
    from lmmreg.methods.tip_adapter import TipAdapter

    inp = _inputs(clip)
    assert zero_shot_scale(inp, _ctx(BaselinesConfig(logit_scale="fixed_100"))) == 100.0
    assert zero_shot_scale(inp, _ctx(BaselinesConfig(logit_scale="model"))) == pytest.approx(inp.logit_scale)
    assert inp.logit_scale != pytest.approx(100.0)
    s = zero_shot_scale(inp, _ctx())  # the default: the model's own
    model = TipAdapter(F.normalize(inp.tail(inp.train_feat).detach(), dim=-1), inp.train_y, inp.class_text,
                       beta=1.0, ratio=0.0, scale=s).eval()
    with torch.no_grad():
        assert torch.allclose(model(inp.tail(inp.test_feat))[1], s * _zero_shot_cos(inp, inp.test_feat), atol=1e-4)


@pytest.mark.parametrize("method", ["prolip", "gda", "tip_adapter", "tip_adapter_f", "linear_probe_lbfgs"])
def test_without_a_validation_split_the_defaults_are_used(clip, method):
    inp = _inputs(clip, n_train=4, n_test=8)  # one training image per class: nothing can be held out
    res = run_method(method, inp, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=FAST)
    defaults = {"prolip": {"lr": 1.0e-5, "reg": 1.0}, "gda": {"alpha": 0.1},
                "tip_adapter": {"beta": 1.0, "alpha": 1.17}, "tip_adapter_f": {"beta": 1.0, "alpha": 1.17},
                "linear_probe_lbfgs": {"C": 1.0}}
    assert res.chosen == defaults[method]


@pytest.mark.parametrize("method", ["prolip", "gda", "tip_adapter", "tip_adapter_f", "linear_probe_lbfgs"])
def test_searches_never_look_at_test_labels(clip, method):
    inp = _inputs(clip, n_train=40, n_test=16)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = dataclasses.replace(inp, test_y=inp.test_y[perm])
    a = run_method(method, inp, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=FAST)
    b = run_method(method, shuffled, alpha=0.0, cfg=TrainConfig(epochs=1), seed=0, baselines=FAST)
    assert a.chosen and a.chosen == b.chosen and torch.equal(a.final.preds, b.final.preds)


# ------------------------------------------------------------------ known answers, one per method


def test_gda_equals_a_hand_computed_lda():
    from lmmreg.methods.gda import gda_statistics

    # class 0: (0,0), (2,0); class 1: (0,2), (2,2). mu = (1,0), (1,2); centred rows (+-1, 0): S = [[4/3,0],[0,0]].
    # (n-1) S + tr(S) I = [[16/3, 0], [0, 4/3]], so P = 2 * [[3/16, 0], [0, 3/4]] = [[3/8, 0], [0, 3/2]].
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    w, b = gda_statistics(x, y, 2)
    assert torch.allclose(w, torch.tensor([[3 / 8, 3 / 8], [0.0, 3.0]]), atol=1e-6)  # P mu^T, [D, C]
    log_half = math.log(0.5)
    assert torch.allclose(b, torch.tensor([log_half - 3 / 16, log_half - 51 / 16]), atol=1e-6)


def test_gda_decides_like_lda_on_a_gaussian_toy():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from lmmreg.methods.gda import gda_statistics

    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    means = np.array([[0.0, 0.0], [1.5, 0.5], [0.5, 2.0]])
    y = np.repeat(np.arange(3), 2000)
    x = means[y] + rng.multivariate_normal([0, 0], cov, size=len(y))
    w, b = gda_statistics(torch.tensor(x, dtype=torch.float32), torch.tensor(y), 3)
    ours = (torch.tensor(x, dtype=torch.float32) @ w + b).argmax(1).numpy()
    lda = LinearDiscriminantAnalysis(priors=[1 / 3] * 3).fit(x, y).predict(x)
    assert (ours == lda).mean() > 0.995  # the shrinkage (tr(S) I next to (n-1) S) is negligible at n = 6000


def test_tip_adapter_at_ratio_zero_is_zero_shot(clip):
    from lmmreg.methods.tip_adapter import TipAdapter, cache_keys

    inp = _inputs(clip)
    with torch.no_grad():
        train_x, test_x = inp.tail(inp.train_feat), inp.tail(inp.test_feat)
        model = TipAdapter(cache_keys(train_x, None), inp.train_y, inp.class_text, beta=5.5, ratio=0.0).eval()
        assert torch.allclose(model(test_x)[1], 100 * _zero_shot_cos(inp, inp.test_feat), atol=1e-4)
        # A cached image matches itself with affinity 1: its own label gets at least exp(0) = 1 from the cache.
        cache = model.cache_logits(F.normalize(train_x[:8], dim=-1), beta=100.0)  # [8, C]
    own = cache.gather(1, inp.train_y[:8, None]).squeeze(1)
    assert (own > 0.999).all() and torch.equal(cache.argmax(1), inp.train_y[:8])


def test_tip_adapter_f_trains_only_the_keys_and_reports_the_searched_setting(clip):
    inp = _inputs(clip)
    res = run_method("tip_adapter_f", inp, alpha=0.0, cfg=TrainConfig(), seed=0, baselines=FAST)
    assert len(res.history) == FAST.tip_adapter.epochs and res.reported_epoch == FAST.tip_adapter.epochs
    assert set(res.chosen) == {"beta", "alpha"}
    keys0 = F.normalize(inp.tail(inp.train_feat).detach(), dim=-1)
    assert not torch.allclose(res.state_dict["keys"], keys0)  # the cache keys moved


def test_prolip_with_a_huge_regulariser_stays_at_zero_shot(clip):
    from lmmreg.methods.prolip import ProjectionClassifier, train_prolip

    inp = _inputs(clip)
    zs = _zero_shot_cos(inp, inp.test_feat)
    with torch.no_grad():  # step 0 is exactly 100 x the zero-shot logits
        logits0 = ProjectionClassifier(inp.tail, inp.class_text)(inp.test_feat)[1]
    assert torch.allclose(logits0, 100 * zs, atol=1e-4)
    cfg = dataclasses.replace(BaselinesConfig(), prolip=ProLIPConfig(steps=30, search=False))
    proj0 = inp.tail.proj.detach()
    held = train_prolip(inp, _ctx(cfg), lr=1.0e-3, reg=1.0e6, eval_x=inp.test_feat, eval_y=inp.test_y)
    free = train_prolip(inp, _ctx(cfg), lr=1.0e-3, reg=0.0, eval_x=inp.test_feat, eval_y=inp.test_y)
    drift_held = (held.state_dict["tail.proj"] - proj0).abs().max()
    drift_free = (free.state_dict["tail.proj"] - proj0).abs().max()
    assert drift_held < 0.05 * drift_free
    assert (held.final.preds == zs.argmax(1)).float().mean() > 0.95
    assert inp.tail.proj.detach().equal(proj0)  # the shared tail is never trained in place


@pytest.mark.parametrize("aug", [0, 2])
def test_prolip_grid_search_trains_each_setting_as_one_run_would(clip, aug, monkeypatch):
    """The batched search (every setting at once) gives the weights, bitwise, and the accuracies of one run each."""
    from lmmreg.methods import prolip as mod

    inp = _inputs(clip, aug=aug)
    ctx = _ctx(dataclasses.replace(BaselinesConfig(), prolip=ProLIPConfig(steps=12)), seed=3)
    grid = [(1.0e-2, 10.0), (1.0e-2, 0.0), (1.0e-3, 1.0), (1.0e-5, 0.1)]
    views = inp.train_views()
    pre = inp.tail.pre_projection(inp.train_feat if views is None else views.flatten(0, 1)).detach()
    pre = pre if views is None else pre.view(*views.shape[:2], -1)
    text = F.normalize(inp.class_text, dim=-1)
    weights = mod._train_grid(pre, inp.train_y, views is not None, inp.tail.proj.detach(), text, grid, steps=12,
                              seed=3, scale=inp.logit_scale)
    accs = mod.search_grid(inp, ctx, grid=grid, eval_x=inp.test_feat, eval_y=inp.test_y)
    for (lr, reg), w, acc in zip(grid, weights, accs, strict=True):
        one = mod.train_prolip(inp, ctx, lr=lr, reg=reg, eval_x=inp.test_feat, eval_y=inp.test_y, search=True)
        assert torch.equal(one.state_dict["tail.proj"], w), (lr, reg)
        assert one.final.acc == acc
    monkeypatch.setattr(mod, "GRID_ELEMENTS", 1)  # batches of one run each: the same accuracies
    assert mod.search_grid(inp, ctx, grid=grid, eval_x=inp.test_feat, eval_y=inp.test_y) == accs


def test_prolip_default_lambda_is_one_over_shots(clip):
    inp = _inputs(clip, n_train=40)  # 10 images per class
    cfg = dataclasses.replace(BaselinesConfig(), prolip=ProLIPConfig(steps=2, search=False))
    res = run_method("prolip", inp, alpha=0.0, cfg=TrainConfig(), seed=0, baselines=cfg)
    assert res.chosen == {"lr": 1.0e-5, "reg": pytest.approx(0.1)}


def test_clip_adapter_at_ratio_zero_is_zero_shot(clip):
    from lmmreg.methods.clip_adapter import ClipAdapter

    inp = _inputs(clip)
    with torch.no_grad():
        f = inp.tail(inp.test_feat)
        off = ClipAdapter(f.shape[1], inp.class_text, reduction=4, ratio=0.0, scale=inp.logit_scale)
        on = ClipAdapter(f.shape[1], inp.class_text, reduction=4, ratio=0.2, scale=inp.logit_scale)
        assert torch.allclose(off(f)[1], inp.logit_scale * _zero_shot_cos(inp, inp.test_feat), atol=1e-4)
        assert on.fc[0].weight.shape == (f.shape[1] // 4, f.shape[1]) and on.fc[0].bias is None
        assert torch.allclose(on(f)[0], 0.2 * on.fc(f) + 0.8 * f)


def test_coop_initialised_from_the_class_prompt_is_zero_shot_at_step_0(clip):
    from lmmreg.methods.coop import build_coop

    inp = _inputs(clip)
    cfg = dataclasses.replace(BaselinesConfig(), coop=CoOpConfig(ctx_init="a photo of a"))
    model = build_coop(inp, _ctx(cfg))
    assert model.prompts.n_ctx == 4 and model.prompts.ctx.requires_grad
    with torch.no_grad():
        text = model.prompts()  # the learnable context runs through the frozen text tower
        assert torch.allclose(text, inp.class_text, atol=1e-5)  # == encode_text("a photo of a <name>.")
        logits = model(inp.tail(inp.test_feat))[1]
    assert torch.allclose(logits, inp.logit_scale * _zero_shot_cos(inp, inp.test_feat), atol=1e-4)


def test_coop_trains_only_the_context(clip):
    inp = _inputs(clip)
    before = {k: v.clone() for k, v in inp.clip_model.state_dict().items()}
    res = run_method("coop", inp, alpha=0.0, cfg=TrainConfig(), seed=0, baselines=FAST)
    assert len(res.history) == FAST.coop.epochs
    assert res.state_dict["prompts.ctx"].shape == (4, inp.clip_model.token_embedding.weight.shape[1])
    assert all(torch.equal(v, inp.clip_model.state_dict()[k]) for k, v in before.items())


def test_coop_evaluation_computes_the_class_text_once_and_follows_the_context(clip):
    from lmmreg.engine import evaluate
    from lmmreg.methods.coop import build_coop

    inp = _inputs(clip)
    model = build_coop(inp, _ctx(FAST))
    x = inp.tail(inp.test_feat).detach()
    calls = []
    model.prompts.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():  # the reference: the text tower on every call
        fresh = model.scale * F.normalize(x, dim=-1) @ F.normalize(model.prompts(), dim=-1).T
    calls.clear()
    ev = evaluate(model, x, inp.test_y, batch_size=8)  # 4 batches, one run of the text tower
    assert len(calls) == 1
    with torch.inference_mode():
        cached = model(x)[1]
    assert len(calls) == 1 and torch.equal(cached, fresh)  # the same bits as the tower gives
    assert ev.preds.tolist() == fresh.argmax(-1).tolist()
    opt = torch.optim.SGD([model.prompts.ctx], lr=1.0)
    model.train()
    loss = F.cross_entropy(model(x)[1], inp.test_y)
    loss.backward()
    opt.step()  # an in-place update of the context: the cache must not answer for the old one
    model.eval()
    calls.clear()
    with torch.inference_mode():
        after = model(x)[1]
    assert len(calls) == 1 and not torch.equal(after, cached)
    with torch.no_grad():
        model.prompts.ctx.add_(0.5)  # changed in eval mode, without train()/eval(): its version tells
    with torch.inference_mode():
        again = model(x)[1]
    assert len(calls) == 2 and not torch.equal(again, after)


def test_linear_probe_lbfgs_is_sklearns_probe_with_the_c_found_on_validation(clip):
    from sklearn.linear_model import LogisticRegression

    inp = _inputs(clip)
    res = run_method("linear_probe_lbfgs", inp, alpha=0.0, cfg=TrainConfig(), seed=0, baselines=FAST)
    with torch.no_grad():
        x, xt = inp.tail(inp.train_feat).double().numpy(), inp.tail(inp.test_feat).double().numpy()
    ref = LogisticRegression(solver="lbfgs", max_iter=1000, C=res.chosen["C"]).fit(x, inp.train_y.numpy())
    assert res.final.preds.tolist() == ref.predict(xt).tolist()
    assert res.final.acc > 90  # separable clusters


def test_lbfgs_c_search_is_coops_binary_search(monkeypatch):
    from lmmreg.methods import linear_probe_lbfgs as lp

    class Fake:  # validation accuracy 1 - |log10 C - 0.3| / 3: a single peak at C = 10^0.3
        def __init__(self, c):
            self.c = c

        def predict(self, x):
            right = int(round(len(x) * max(0.0, 1 - abs(math.log10(self.c) - 0.3) / 3)))
            return np.r_[np.zeros(right), np.ones(len(x) - right)]

    monkeypatch.setattr(lp, "_logreg", lambda x, y, c, max_iter: Fake(c))
    best = lp.search_c(np.zeros((2, 1)), np.zeros(2), np.zeros((1000, 1)), np.zeros(1000),
                       grid=[1.0e6, 1.0e4, 1.0e2, 1.0, 1.0e-2, 1.0e-4, 1.0e-6], steps=8, max_iter=1)
    assert abs(math.log10(best) - 0.3) < 0.05  # coarse peak C = 1, then 8 halvings of [0.1, 10] in log10


def test_cosine_schedules_follow_the_repos():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0e-3)
    sched = cosine_schedule(opt, epochs=4, steps_per_epoch=3, per="epoch", warmup_epochs=1, warmup_lr=1.0e-5)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == [pytest.approx(1.0e-5)] * 3  # Dassl's constant warm-up epoch
    assert lrs[3:6] == [pytest.approx(2.0e-3)] * 3  # then cosine from the base lr, changing once per epoch
    assert lrs[6] == pytest.approx(1.0e-3 * (1 + math.cos(math.pi / 4)))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = cosine_schedule(opt, epochs=300, steps_per_epoch=1)
    for _ in range(150):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)  # ProLIP: half-way through its 300 steps
