"""Stage `centroids`: Eq. 1 from the training split only, saved with class names, counts and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmmreg.artifacts import Artifact, load_artifact, save_artifact
from lmmreg.config import load_params
from lmmreg.data.manifest import Record, write_manifest
from lmmreg.errors import InputError
from lmmreg.stages.centroids import compute_centroids, main

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "pole vaulting"]


def _fixture(tmp_path: Path, *, per_class_train=(2, 1, 1), descriptions: int = 3, skip_train_of: str | None = None):
    """A manifest (train + one test image per class) and a descriptions.pt with known embeddings."""
    records = []
    for label, name in enumerate(CLASSES):
        for split, n in (("train", per_class_train[label]), ("test", 1)):
            for k in range(n):
                rid = f"{split}/{name}_{k}.jpg"
                records.append(Record(rid, rid, label, name, split, "0" * 64, 8, 8))
    write_manifest(records, CLASSES, tmp_path / "prepared")
    ids, labels, embs = [], [], []
    gen = torch.Generator().manual_seed(0)
    for r in records:
        if r.split == "train" and r.class_name == skip_train_of:
            continue
        for j in range(descriptions):
            ids.append(f"{r.id}#{j}")
            labels.append(r.label)
            # test rows are far away, so any leak into a centroid shows
            embs.append(torch.randn(4, generator=gen) + (1000.0 if r.split == "test" else 0.0))
    text = tmp_path / "text"
    save_artifact(text / "descriptions.pt", Artifact(ids, torch.tensor(labels), {"emb": torch.stack(embs)},
                                                     {"clip_model": "tiny", "describe_setting": "abc"}))
    return records, ids, torch.stack(embs)


def test_centroids_use_training_descriptions_only(tmp_path):
    records, ids, emb = _fixture(tmp_path)
    out = tmp_path / "centroids.pt"
    main(load_params(REPO / "params.yaml"), manifest=tmp_path / "prepared", text=tmp_path / "text", out=out)
    art = load_artifact(out)
    assert art.ids == CLASSES and art.labels.tolist() == [0, 1, 2]
    split = {r.id: r.split for r in records}
    label = {r.id: r.label for r in records}
    for c in range(len(CLASSES)):
        rows = [k for k, i in enumerate(ids) if split[i.split("#")[0]] == "train" and label[i.split("#")[0]] == c]
        torch.testing.assert_close(art.tensors["centroid"][c], emb[rows].mean(0))
    assert art.tensors["centroid"].abs().max() < 100  # no test description leaked in
    assert art.tensors["count"].tolist() == [6, 3, 3]  # descriptions averaged per class
    assert art.tensors["n_images"].tolist() == [2, 1, 1]
    meta = art.meta
    assert meta["classes"] == CLASSES and meta["split"] == "train" and meta["eq"] == "1"
    assert meta["clip_model"] == "tiny" and meta["describe_setting"] == "abc"  # carried from the text artifact
    assert meta["n_descriptions"] == 12 and meta["n_images"] == 4


def test_class_without_training_descriptions_is_named(tmp_path):
    _fixture(tmp_path, skip_train_of="pole vaulting")
    with pytest.raises(ValueError, match=r"descriptions.pt.*\['pole vaulting'\]"):
        main(load_params(REPO / "params.yaml"), manifest=tmp_path / "prepared", text=tmp_path / "text",
             out=tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_stale_text_artifact_is_refused(tmp_path):
    _fixture(tmp_path)
    classes = json.loads((tmp_path / "prepared" / "classes.json").read_text())
    write_manifest([Record("other.jpg", "other.jpg", 0, classes[0], "train", "0" * 64, 8, 8)], classes,
                   tmp_path / "prepared")
    with pytest.raises(InputError, match="not in"):  # stale: re-run DVC, no traceback
        main(load_params(REPO / "params.yaml"), manifest=tmp_path / "prepared", text=tmp_path / "text",
             out=tmp_path / "c.pt")


def test_compute_centroids_checks_alignment():
    with pytest.raises(ValueError, match="not aligned"):
        compute_centroids(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), torch.ones(3, dtype=torch.bool), ["a"])
    with pytest.raises(ValueError, match="outside"):
        compute_centroids(torch.zeros(1, 2), torch.tensor([5]), torch.ones(1, dtype=torch.bool), ["a"])
