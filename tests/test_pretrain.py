"""The demo CLIP's in-world pretraining: a deterministic corpus, a checkpoint open_clip loads by path (with its
architecture checked), and a short real pretraining that must learn something."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lmmreg.clip.build import build_clip
from lmmreg.clip.weights import read_checkpoint_meta, save_clip_checkpoint
from lmmreg.config import ClipConfig, ConfigError, DemoConfig, PretrainConfig, parse_params
from lmmreg.data.corpus import HELDOUT, TRAIN, CaptionSpec, corpus_item, fitting_scene, world_prototypes
from lmmreg.data.demo import generate_demo
from lmmreg.pretrain import evaluate_clip, render_corpus, retrieval, train_clip
from lmmreg.report import demo_banner
from lmmreg.stages import pretrain_clip
from tests.conftest import small_raw_params

TINY = "lmmreg-tiny-quickgelu"


def _item(i, stream=TRAIN, seed=0):
    return corpus_item(i, seed=seed, stream=stream, image_size=32, n_captions=2, spec=CaptionSpec(),
                       protos=world_prototypes(0))


def test_corpus_items_are_deterministic_and_streams_disjoint():
    a, b = _item(7), _item(7)
    assert (a[0] == b[0]).all() and a[1] == b[1] and a[2] == b[2]
    assert not (_item(7, HELDOUT)[0] == a[0]).all()  # held-out pairs are other images
    assert not (_item(7, seed=1)[0] == a[0]).all()
    cfg = PretrainConfig(n_images=64, captions_per_image=2)
    one = render_corpus(cfg, stream=TRAIN, n=40, demo_seed=0, image_size=32, workers=0)
    two = render_corpus(cfg, stream=TRAIN, n=40, demo_seed=0, image_size=32, workers=2)
    assert torch.equal(one.images, two.images) and one.captions == two.captions  # workers change nothing


def test_background_render_gives_the_same_corpus_and_its_tokens(monkeypatch):
    from lmmreg import pretrain

    monkeypatch.setattr(pretrain.RenderJob, "CHUNK", 9)  # several chunks, captions repeated across them
    cfg = PretrainConfig(n_images=64, captions_per_image=2)
    _, _, tokenizer = build_clip(ClipConfig(model=TINY, pretrained=""))
    ref = render_corpus(cfg, stream=TRAIN, n=40, demo_seed=0, image_size=32, workers=0)
    job = pretrain.RenderJob(cfg, stream=TRAIN, n=40, demo_seed=0, image_size=32, workers=2, background=True)
    got = job.result(tokenizer)
    assert torch.equal(got.images, ref.images) and got.captions == ref.captions and got.scenes == ref.scenes
    flat = [c for caps in ref.captions for c in caps]
    assert len(set(flat)) < len(flat)  # duplicates: tokenized once, placed at every position
    assert ref.tokens is None and torch.equal(got.tokens, tokenizer(flat))


def test_corpus_covers_the_vocabulary_and_names_scenes_where_they_fit():
    protos = world_prototypes(0)
    items = [_item(i) for i in range(400)]
    shapes = {scene["shape"] for _, _, scene in items}
    assert len(shapes) == 6  # the whole vocabulary, not only the classes' prototypes
    named = [any(p["name"] in c for c in caps for p in protos) for _, caps, _ in items]
    fits = [fitting_scene(scene, protos, 3) is not None for _, _, scene in items]
    assert 0.05 < sum(named) / len(items) < 0.4
    # A caption names a scene type only where the scene fits one.
    assert all(f for n, f in zip(named, fits, strict=True) if n)


def test_retrieval_recall_on_known_similarities():
    img = torch.eye(4)
    txt = torch.eye(4)[[0, 1, 3, 2]]  # pairs 2 and 3 swapped
    r = retrieval(img, txt, ks=(1, 2))
    assert (r["i2t_r1"], r["i2t_r2"], r["t2i_r1"], r["t2i_r2"]) == (50.0, 100.0, 50.0, 100.0)


def test_checkpoint_loads_through_open_clip_by_path_and_refuses_another_architecture(tmp_path):
    model, _, _ = build_clip(ClipConfig(model=TINY, init_seed=3))
    path = tmp_path / "clip.pt"
    meta = save_clip_checkpoint(model, path, arch=TINY, made_by={"made_by": "test"})
    assert meta["quick_gelu"] is True and read_checkpoint_meta(path)["arch"] == TINY
    loaded, _, _ = build_clip(ClipConfig(model=TINY, pretrained=str(path), init_seed=99))
    for (k, v), (_, w) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    # A GELU-trained file must not load silently into a QuickGELU architecture: the sidecar says what it was.
    side = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**side, "arch": "lmmreg-tiny", "quick_gelu": False}))
    with pytest.raises(ValueError, match="quick_gelu=False"):
        build_clip(ClipConfig(model=TINY, pretrained=str(path)))


@pytest.mark.slow
def test_a_few_seconds_of_pretraining_learn_the_world(tmp_path):
    """Retrieval on held-out pairs and background zero-shot far above chance after a short real pretraining."""
    torch.set_num_threads(2)
    cfg = PretrainConfig(enabled=True, n_images=1024, heldout_images=200, steps=60, batch_size=128, lr=3.0e-3,
                         warmup_steps=10)
    corpus = render_corpus(cfg, stream=TRAIN, n=cfg.n_images, demo_seed=0, image_size=64, workers=0)
    heldout = render_corpus(cfg, stream=HELDOUT, n=cfg.heldout_images, demo_seed=0, image_size=64, workers=0)
    model, _, tok = build_clip(ClipConfig(model=TINY))
    demo = tmp_path / "demo"
    generate_demo(DemoConfig(n_classes=3, train_per_class=2, test_per_class=4, image_size=64), demo)
    images, labels, names = pretrain_clip.load_demo_test(demo)
    kw = {"demo_images": images, "demo_labels": labels, "class_names": names, "class_prompt": "a photo of a {}."}
    before = evaluate_clip(model, tok, heldout, **kw)
    history = train_clip(model, tok, corpus, cfg)
    after = evaluate_clip(model, tok, heldout, **kw)
    print(before, after)
    assert len(history) == 60 and history[-1]["loss"] < history[0]["loss"]
    assert after["i2t_r5"] > 4 * 5 / 200 * 100 and after["i2t_r5"] > 2 * before["i2t_r5"]  # chance: 2.5 %
    assert after["zs_background"] > 2 * after["zs_background_chance"]


def test_stage_is_a_no_op_when_disabled_and_checks_where_the_checkpoint_goes(tmp_path):
    params = parse_params(small_raw_params())  # pretrain.enabled: false
    out, metrics = tmp_path / "clip_pretrain", tmp_path / "metrics/pretrain.json"
    assert pretrain_clip.main(params, demo_raw=tmp_path / "absent", out=out, metrics=metrics) == {"enabled": False}
    assert (out / "README.txt").is_file() and json.loads(metrics.read_text()) == {"enabled": False}
    on = dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, enabled=True))
    with pytest.raises(ConfigError, match="clip.pretrained must be this stage's checkpoint"):
        pretrain_clip.main(on, demo_raw=tmp_path / "absent", out=out, metrics=metrics)


def test_report_banner_says_what_the_model_is():
    params = parse_params(small_raw_params())
    assert "randomly initialised" in demo_banner(params)
    pre = dataclasses.replace(params, clip=dataclasses.replace(params.clip, pretrained="models/x/checkpoint.pt"))
    text = demo_banner(pre, {"enabled": True, "train_minutes": 3.9,
                             "trained": {"zs_demo_test": 70.1, "zs_demo_chance": 12.5}})
    assert "pretrained for 3.9 min" in text and "randomly" not in text and "70.1%" in text


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    cfg = PretrainConfig(enabled=True, n_images=96, heldout_images=10, steps=8, batch_size=32, warmup_steps=2)
    corpus = render_corpus(cfg, stream=TRAIN, n=cfg.n_images, demo_seed=0, image_size=64, workers=0)

    def fresh():
        model, _, tok = build_clip(ClipConfig(model=TINY))
        return model, tok

    straight, tok = fresh()
    full = train_clip(straight, tok, corpus, cfg)

    class Killed(Exception):
        pass

    def kill_at_6(row):
        if row["step"] == 6:
            raise Killed

    resume = tmp_path / "state.pt"
    first, _ = fresh()
    with pytest.raises(Killed):
        train_clip(first, tok, corpus, cfg, on_step=kill_at_6, resume=resume, save_every=4)
    assert torch.load(resume, weights_only=True)["step"] == 4
    second, _ = fresh()
    resumed = train_clip(second, tok, corpus, cfg, resume=resume, save_every=4)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
    for (k, v), (_, w) in zip(straight.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_dataset_classes_depart_from_the_world_in_shift_attributes():
    from lmmreg.data.demo import MAIN_ATTRS, class_prototypes, dataset_prototypes

    world, data = class_prototypes(8, 0), dataset_prototypes(8, 0, shift=1)
    for w, d in zip(world, data, strict=True):
        assert w["name"] == d["name"] and sum(w[a] != d[a] for a in MAIN_ATTRS) == 1
    assert dataset_prototypes(8, 0, shift=0) == world


@pytest.mark.slow
def test_stage_writes_checkpoint_metrics_and_its_mlflow_run(tmp_path, mlflow_root):
    from mlflow.tracking import MlflowClient

    from lmmreg import tracking

    raw = small_raw_params()
    out = tmp_path / "models/clip_pretrain"
    raw["clip"]["pretrained"] = str(out / pretrain_clip.CHECKPOINT)
    raw["demo"]["image_size"] = 64
    raw["pretrain"].update(enabled=True, n_images=256, heldout_images=20, steps=3, batch_size=64, threads=1)
    params = parse_params(raw)
    demo = tmp_path / "demo"
    generate_demo(params.demo, demo)
    summary = pretrain_clip.main(params, demo_raw=demo, out=out, metrics=tmp_path / "pretrain.json", workers=0,
                                 resume_dir=tmp_path / "resume")
    assert summary["enabled"] and set(summary["trained"]) == set(summary["random_init"])
    assert read_checkpoint_meta(out / pretrain_clip.CHECKPOINT)["pretrain"]["steps"] == 3
    assert not list((tmp_path / "resume").glob("*.pt"))  # the resume state goes once the checkpoint is written
    client = MlflowClient(tracking.tracking_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(tracking.PRETRAIN_EXPERIMENT).experiment_id])
    assert run.data.params["pretrain.steps"] == "3" and "init_zs_demo_test" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
