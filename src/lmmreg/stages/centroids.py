"""Stage `centroids@<dataset>`: the mean semantic class descriptions C_l (Eq. 1), training split only.

    python -m lmmreg.stages.centroids --manifest data/prepared/demo --text data/text/demo \
        --out data/centroids/demo.pt

Writes one row per class (id = class name, in `classes.json` order): `centroid` [C, D], `count` (training
descriptions averaged) and `n_images` (training images they came from); the meta records how they were
made (Eq. 1, train split only, un-normalised mean, the text artifact's CLIP model and describe setting).
Test images never contribute. A class without any training description is an error naming the class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmmreg.artifacts import Artifact, load_artifact, save_artifact
from lmmreg.centroids import compute_centroids, description_owners
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.manifest import load_manifest
from lmmreg.errors import InputError

log = logging.getLogger(__name__)


def main(params: Params, *, manifest: Path, text: Path, out: Path) -> None:
    records, classes = load_manifest(manifest)
    desc = load_artifact(text / "descriptions.pt")
    split_of = {r.id: r.split for r in records}
    owners = description_owners(desc)
    unknown = sorted(set(owners) - set(split_of))
    if unknown:
        raise InputError(f"{text / 'descriptions.pt'}: images not in {manifest}: {unknown[:3]} (re-run dvc repro)")
    is_train = torch.tensor([split_of[o] == "train" for o in owners])
    label_of = {r.id: r.label for r in records}
    bad = [i for i, o, y in zip(desc.ids, owners, desc.labels.tolist(), strict=True) if label_of[o] != y]
    if bad:
        raise InputError(f"{text / 'descriptions.pt'}: labels disagree with {manifest} for {bad[:3]} "
                         "(re-run dvc repro)")
    try:
        cents, counts = compute_centroids(desc.tensors["emb"], desc.labels, is_train, classes)
    except ValueError as e:
        raise InputError(f"{text / 'descriptions.pt'}: {e}") from None
    train_images = {o for o, t in zip(owners, is_train.tolist(), strict=True) if t}
    n_images = torch.bincount(torch.tensor([label_of[o] for o in sorted(train_images)], dtype=torch.long),
                              minlength=len(classes))
    meta = {**desc.meta, "classes": list(classes), "eq": "1", "split": "train", "reduction": "mean",
            "normalized": False, "source": str(text / "descriptions.pt"), "n_descriptions": int(counts.sum()),
            "n_images": len(train_images)}
    save_artifact(out, Artifact(list(classes), torch.arange(len(classes)),
                                {"centroid": cents, "count": counts, "n_images": n_images}, meta))
    log.info("centroids [%d, %d] from %d training descriptions of %d images -> %s", *cents.shape,
             int(counts.sum()), len(train_images), out)


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("manifest", "text", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    run_stage(lambda a, p: main(p, manifest=a.manifest, text=a.text, out=a.out), parser)


if __name__ == "__main__":
    cli()
