"""Tensor artifacts that carry their own ids, labels and provenance, so they align by id, never by position.

On disk: a `torch.save` dict {"format", "ids", "labels", "tensors", "meta"} readable with
`weights_only=True`. `meta` records how it was made (model, pretrained tag, prompt hash, code version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

import lmmreg

FORMAT = "lmmreg-artifact/1"


@dataclass
class Artifact:
    ids: list[str]
    labels: torch.Tensor  # [N] int64
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)


def save_artifact(path: str | Path, art: Artifact) -> None:
    n = len(art.ids)
    if len(set(art.ids)) != n:
        raise ValueError(f"{path}: duplicate ids")
    for name, t in art.tensors.items():
        if t.shape[0] != n:
            raise ValueError(f"{path}: tensor {name!r} has {t.shape[0]} rows for {n} ids")
    if art.labels.shape[0] != n:
        raise ValueError(f"{path}: {art.labels.shape[0]} labels for {n} ids")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"code_version": lmmreg.__version__, **art.meta}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "ids": list(art.ids), "labels": art.labels.long(),
                "tensors": {k: v.contiguous() for k, v in art.tensors.items()}, "meta": meta}, tmp)
    os.replace(tmp, path)  # never leave a half-written artifact under the real name


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: artifact not found (run `dvc repro` for the stage that writes it)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} file")
    return Artifact(blob["ids"], blob["labels"], blob["tensors"], blob["meta"])


def check_aligned(a: Artifact, b: Artifact, *, names: tuple[str, str]) -> None:
    """Same ids in the same order with the same labels, or an error naming both artifacts."""
    if a.ids != b.ids:
        extra = sorted(set(a.ids) ^ set(b.ids))[:3]
        raise ValueError(f"{names[0]} and {names[1]} hold different images (e.g. {extra}); re-run dvc repro")
    if not torch.equal(a.labels, b.labels):
        raise ValueError(f"{names[0]} and {names[1]} disagree on labels")
