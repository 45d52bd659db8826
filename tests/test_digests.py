"""The plan stage's content digests without torch (lmmreg.digests): the same digest as reading the artifact with
torch, blind to meta, moved by any tensor or id, and a file that is not an artifact is refused without running it."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile

import pytest
import torch

from lmmreg.artifacts import Artifact, load_artifact, save_artifact
from lmmreg.digests import artifact_digest
from lmmreg.errors import InputError


def _with_torch(path) -> str:
    """The digest as torch computes it: ids, then (name, dtype, shape, bytes) of labels and each tensor."""
    art = load_artifact(path)
    h = hashlib.sha256(json.dumps(art.ids).encode())
    for name, t in [("labels", art.labels), *sorted(art.tensors.items())]:
        t = t.detach().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _save(path, *, ids=("a", "b", "c"), emb=None, meta=None) -> None:
    emb = torch.arange(6, dtype=torch.float32).reshape(3, 2) if emb is None else emb
    tensors = {"emb": emb, "mask": torch.tensor([1, 0, 1]).bool(), "half": emb.half()}
    save_artifact(path, Artifact(list(ids), torch.tensor([0, 1, 0]), tensors, meta or {"model": "x"}))


def test_same_digest_as_torch_blind_to_meta_moved_by_content(tmp_path):
    a, b, c, d = (tmp_path / f"{n}.pt" for n in "abcd")
    _save(a)
    _save(b, meta={"model": "other", "describe_setting": "changed"})
    emb = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    emb[1, 1] += 1e-6
    _save(c, emb=emb)
    _save(d, ids=("a", "c", "b"))
    assert artifact_digest(a) == _with_torch(a)
    assert artifact_digest(a) == artifact_digest(b)  # provenance is not content
    assert len({artifact_digest(a), artifact_digest(c), artifact_digest(d)}) == 3


def test_a_file_that_would_run_code_is_refused_unrun(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"ids": [], "labels": Boom(), "tensors": {}}))
    with pytest.raises(InputError, match="not a readable artifact"):
        artifact_digest(path)
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(InputError, match="text.pt: not a readable artifact"):
        artifact_digest(tmp_path / "text.pt")
