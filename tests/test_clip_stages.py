"""Stages `features` and `embed_text` on tiny fixtures built here, with the tiny random CLIP."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmmreg.artifacts import load_artifact
from lmmreg.clip.build import build_clip
from lmmreg.clip.vision import encode_boundary
from lmmreg.clip.weights import WeightsNotFoundError
from lmmreg.config import ClipConfig, load_params
from lmmreg.data.images import load_rgb
from lmmreg.data.manifest import Record, sha256_file, write_manifest
from lmmreg.stages import embed_text, features

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["red", "blue"]


@pytest.fixture()
def dataset(tmp_path):
    """6 small JPEGs of odd sizes (3 train, 3 test), a manifest and descriptions (one too long for CLIP)."""
    rng = np.random.default_rng(0)
    raw, records = tmp_path / "raw", []
    for k in range(6):
        split, label = ("train", "test")[k % 2], k % 2
        path = raw / f"{CLASSES[label]}_{k}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + 7 * k, 50, 3), dtype=np.uint8)).save(path)
        records.append(Record(path.name, path.name, label, CLASSES[label], split, sha256_file(path), 50, 40 + 7 * k))
    write_manifest(records, CLASSES, tmp_path / "prepared")
    with (tmp_path / "descriptions.jsonl").open("w") as f:
        for r in records:
            descs = [f"a {r.class_name} thing number {r.id}", "a picture"]
            if r.id == records[0].id:
                descs.append(" ".join(["very long description"] * 40))
            f.write(json.dumps({"id": r.id, "descriptions": descs}) + "\n")
    return tmp_path, records


def _params(**clip):
    p = load_params(REPO / "params.yaml")
    return dataclasses.replace(p, clip=ClipConfig(**clip))


@pytest.mark.parametrize("unlocked_groups", [1, 2])
def test_features_equal_direct_encoding_by_id(dataset, unlocked_groups):
    root, records = dataset
    out = root / "feat.pt"
    params = _params(unlocked_groups=unlocked_groups)
    features.main(params, raw=root / "raw", manifest=root / "prepared", out=out, workers=0, batch_size=4)
    art = load_artifact(out)
    model, preprocess, _ = build_clip(params.clip)
    by_id = {r.id: r for r in records}
    with torch.no_grad():
        for k, rid in enumerate(art.ids):
            img = preprocess(load_rgb(root / "raw" / by_id[rid].path))[None]
            torch.testing.assert_close(art.tensors["feat"][k], encode_boundary(model.visual, img, unlocked_groups)[0],
                                       rtol=1e-4, atol=1e-5)
            assert bool(art.tensors["is_test"][k]) == (by_id[rid].split == "test")
    assert art.meta["unlocked_groups"] == unlocked_groups and art.meta["precision"] == "fp32"
    assert "aug" not in art.tensors


def test_augmented_views_cached_and_independent_of_workers(dataset):
    root, records = dataset
    params = _params(augment_views=2)
    features.main(params, raw=root / "raw", manifest=root / "prepared", out=root / "a.pt", workers=0, batch_size=3)
    features.main(params, raw=root / "raw", manifest=root / "prepared", out=root / "b.pt", workers=2, batch_size=2)
    a, b = load_artifact(root / "a.pt"), load_artifact(root / "b.pt")
    assert a.tensors["aug"].shape == (6, 2, 64)  # [N, K, width]
    torch.testing.assert_close(a.tensors["aug"], b.tensors["aug"])
    torch.testing.assert_close(a.tensors["feat"], b.tensors["feat"])
    train = a.tensors["has_aug"]
    assert train.tolist() == [not t for t in a.tensors["is_test"].tolist()]
    assert (a.tensors["aug"][~train] == 0).all()
    views = a.tensors["aug"][train]  # [Ntr, K, W]
    assert not torch.allclose(views[:, 0], views[:, 1])  # two different crops
    assert not torch.allclose(views[:, 0], a.tensors["feat"][train])  # and not the clean view


def test_missing_weights_fail_before_any_work(dataset, monkeypatch, tmp_path):
    root, _ = dataset
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    params = _params(pretrained=str(tmp_path / "nowhere" / "ViT-L-14.pt"))
    with pytest.raises(WeightsNotFoundError, match="ViT-L-14.pt"):
        features.main(params, raw=root / "raw", manifest=root / "missing-manifest", out=root / "f.pt")
    with pytest.raises(WeightsNotFoundError, match="ViT-L-14.pt"):
        embed_text.main(params, manifest=root / "missing-manifest", descriptions=root / "nope.jsonl",
                        out=root / "text")


def test_embed_text_counts_truncation_and_keeps_order(dataset):
    root, records = dataset
    params = _params()
    out = root / "text"
    embed_text.main(params, manifest=root / "prepared", descriptions=root / "descriptions.jsonl", out=out,
                    batch_size=3)
    desc = load_artifact(out / "descriptions.pt")
    assert desc.meta["n_truncated"] == 1 and desc.meta["padding"] == "longest-in-batch"
    assert desc.ids[int(desc.tensors["truncated"].nonzero()[0])] == f"{records[0].id}#2"
    model, _, tok = build_clip(params.clip)
    texts = {}
    for line in (root / "descriptions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        texts.update({f"{rec['id']}#{j}": t for j, t in enumerate(rec["descriptions"])})
    with torch.no_grad():
        want = model.encode_text(tok([texts[i] for i in desc.ids]))
    torch.testing.assert_close(desc.tensors["emb"], want, rtol=1e-4, atol=1e-5)
    mean = load_artifact(out / "image_mean.pt")
    first = [k for k, i in enumerate(desc.ids) if i.startswith(f"{mean.ids[0]}#")]
    torch.testing.assert_close(mean.tensors["mean"][0], want[first].mean(0))
    assert load_artifact(out / "class_text.pt").ids == CLASSES
