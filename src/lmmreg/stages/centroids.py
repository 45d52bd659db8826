"""Stage `centroids@<dataset>`: the mean semantic class descriptions C_l (Eq. 1), training split only.

    python -m lmmreg.stages.centroids --manifest data/prepared/demo --text data/text/demo \
        --out data/centroids/demo.pt
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmmreg.artifacts import Artifact, load_artifact, save_artifact
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.manifest import load_manifest

log = logging.getLogger(__name__)


def compute_centroids(emb: torch.Tensor, labels: torch.Tensor, is_train: torch.Tensor,
                      classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """C_l = mean of the description embeddings t_i^j of training images with label l. [C, D], counts [C]."""
    e, y = emb[is_train], labels[is_train]
    counts = torch.bincount(y, minlength=len(classes))
    empty = [classes[c] for c in range(len(classes)) if counts[c] == 0]
    if empty:
        raise ValueError(f"no training descriptions for class(es) {empty}: cannot form their centroids")
    sums = torch.zeros(len(classes), emb.shape[1], dtype=emb.dtype).index_add_(0, y, e)
    return sums / counts[:, None].to(emb.dtype), counts


def main(params: Params, *, manifest: Path, text: Path, out: Path) -> None:
    records, classes = load_manifest(manifest)
    desc = load_artifact(text / "descriptions.pt")
    split_of = {r.id: r.split for r in records}
    owners = [i.rsplit("#", 1)[0] for i in desc.ids]
    unknown = sorted(set(owners) - set(split_of))
    if unknown:
        raise KeyError(f"{text / 'descriptions.pt'}: images not in {manifest}: {unknown[:3]} (re-run dvc repro)")
    is_train = torch.tensor([split_of[o] == "train" for o in owners])
    cents, counts = compute_centroids(desc.tensors["emb"], desc.labels, is_train, classes)
    save_artifact(out, Artifact(list(classes), torch.arange(len(classes)), {"centroid": cents, "count": counts},
                                {**desc.meta, "split": "train", "eq": "1"}))
    log.info("centroids [%d, %d] from %d training descriptions -> %s", *cents.shape, int(counts.sum()), out)


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("manifest", "text", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    run_stage(lambda a, p: main(p, manifest=a.manifest, text=a.text, out=a.out), parser)


if __name__ == "__main__":
    cli()
