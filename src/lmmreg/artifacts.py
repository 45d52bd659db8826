"""Tensor artifacts that carry their own ids, labels and provenance, so they align by id, never by position.

On disk: a `torch.save` dict {"format", "ids", "labels", "tensors", "meta", "crc32"} readable with
`weights_only=True`. `meta` records how it was made (model, pretrained tag, prompt hash, code version);
`crc32` holds a checksum of every tensor's bytes, so a damaged file that still unpickles is refused on load
instead of giving a silently wrong result (files written before it are read without the check).
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

import lmmreg
from lmmreg.errors import InputError

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
    tensors = {k: v.contiguous() for k, v in art.tensors.items()}
    labels = art.labels.long()
    torch.save({"format": FORMAT, "ids": list(art.ids), "labels": labels, "tensors": tensors, "meta": meta,
                "crc32": checksums(labels, tensors)}, tmp)
    os.replace(tmp, path)  # never leave a half-written artifact under the real name


def _crc32(t: torch.Tensor) -> int:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return zlib.crc32(flat.view(torch.uint8).numpy().data) if flat.numel() else 0


def checksums(labels: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """CRC-32 of the bytes of the labels and of each tensor (~GB/s: corruption, not tampering, is the concern)."""
    return {"labels": _crc32(labels), **{f"tensors.{k}": _crc32(v) for k, v in tensors.items()}}


class CorruptArtifactError(InputError):
    """A cached artifact that cannot be read back as what it claims to be (truncated, damaged, foreign)."""


# data/<folder>/<dataset>[.pt | /<file>.pt] -> the dvc.yaml stage that writes it
_WRITERS = {"features": "features", "centroids": "centroids", "text": "embed_text"}


def repair_hint(path: str | Path) -> str:
    """The commands that restore or rebuild an artifact: DVC's cached copy, else the stage that writes it."""
    path = Path(path)
    parts = path.parts
    stage = "<stage>"
    for i, part in enumerate(parts[:-1]):
        if part in _WRITERS and i + 1 < len(parts):
            stage = f"{_WRITERS[part]}@{Path(parts[i + 1]).stem}"
            out = Path(*parts[:i + 2])  # the stage's output: the file itself, or its folder (data/text/<ds>)
            break
    else:
        out = path
    return f"restore it with `dvc checkout --force {out}`, or rebuild it with `dvc repro -f {stage}`"


def load_artifact(path: str | Path) -> Artifact:
    """Read an artifact; a missing, truncated, damaged or inconsistent file is an error naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: artifact not found (run `dvc repro` for the stage that writes it)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            IndexError, KeyError) as e:  # random bytes reach the legacy unpickler: 6 % and 1 % of 4,000 tries
        reason = (str(e).splitlines()[0].split(". ")[0] if str(e) else "") or "empty or cut short"
        raise CorruptArtifactError(f"{path}: unreadable, truncated or damaged ({type(e).__name__}: {reason}); "
                                   f"{repair_hint(path)}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CorruptArtifactError(f"{path}: not an {FORMAT} file; {repair_hint(path)}")
    try:
        art = Artifact(list(blob["ids"]), blob["labels"], dict(blob["tensors"]), dict(blob["meta"]))
    except (KeyError, TypeError) as e:
        raise CorruptArtifactError(f"{path}: incomplete artifact ({type(e).__name__}: {e}); "
                                   f"{repair_hint(path)}") from None
    if "crc32" in blob and blob["crc32"] != checksums(art.labels, art.tensors):
        raise CorruptArtifactError(f"{path}: damaged (its tensors no longer match their checksums); "
                                   f"{repair_hint(path)}")
    n = len(art.ids)
    bad = [k for k, v in art.tensors.items() if not isinstance(v, torch.Tensor) or v.shape[0] != n]
    if not isinstance(art.labels, torch.Tensor) or art.labels.shape[0] != n or bad or len(set(art.ids)) != n:
        raise CorruptArtifactError(f"{path}: {n} ids do not match its labels or tensors {bad}; {repair_hint(path)}")
    return art


def check_aligned(a: Artifact, b: Artifact, *, names: tuple[str, str]) -> None:
    """Same ids in the same order with the same labels, or an error naming both artifacts."""
    if a.ids != b.ids:
        extra = sorted(set(a.ids) ^ set(b.ids))[:3]
        raise InputError(f"{names[0]} and {names[1]} hold different images (e.g. {extra}); re-run dvc repro")
    if not torch.equal(a.labels, b.labels):
        raise InputError(f"{names[0]} and {names[1]} disagree on labels")
