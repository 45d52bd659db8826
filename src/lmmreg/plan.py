"""What each method's result depends on, written down so DVC can tell which methods a change touches.

The train stage is one DVC stage per (dataset, method) (`train@demo-lmm_reg`). Each depends on its own plan
file `data/plan/<dataset>/<method>.json`, written by stage `plan`: the settings the method declares in the
registry (`lmmreg.identity.identity_parts`: alpha only for lmm_reg, `train:` only for the engine-trained
methods, `baselines.<family>` for a baseline, the describe setting only where the LMM's output is read) and a
digest of the content of each input file it reads. A params change rewrites only the plan files whose content
it changes, so `dvc repro` re-trains only those methods, and DVC's run-cache restores a method's earlier
outputs when a plan comes back to an earlier content (`dvc exp run -S alpha=0.1` then `-S alpha=0.01`).

Digests cover tensors, ids and labels, not an artifact's provenance: the class-prompt embeddings record the
describe setting they were written beside, which does not change them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmmreg.artifacts import load_artifact
from lmmreg.config import Params
from lmmreg.identity import identity_parts, run_identity, uses_class_prompt, uses_lmm
from lmmreg.methods import get_method

PLAN_FORMAT = "lmmreg-plan/1"


@dataclass(frozen=True)
class TrainPaths:
    """The train stage's inputs, as dvc.yaml passes them."""

    manifest: Path
    features: Path
    text: Path
    centroids: Path


def artifact_digest(path: Path) -> str:
    """sha256 of an artifact's ids, labels and tensors (not its meta)."""
    art = load_artifact(path)
    h = hashlib.sha256(json.dumps(art.ids).encode())
    for name, t in [("labels", art.labels), *sorted(art.tensors.items())]:
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def method_input_files(params: Params, method: str, paths: TrainPaths) -> list[Path]:
    """The artifact files a method's result depends on (the train stage loads them all; a method reads these)."""
    spec = get_method(method)
    files = [paths.features]  # every method: the cached image features
    if uses_class_prompt(params, method):
        files.append(paths.text / "class_text.pt")
    if uses_lmm(params, method):
        files += [paths.centroids, paths.text / "image_mean.pt"]
        if params.train.shots != "all":  # few-shot centroids come from the K-shot images' own descriptions
            files.append(paths.text / "descriptions.pt")
    if "clip_model" in spec.needs and paths.text / "class_text.pt" not in files:
        files.append(paths.text / "class_text.pt")  # prompt learning runs the text tower these embeddings came from
    return files


def local_checkpoint(params: Params) -> Path | None:
    """`clip.pretrained` when it names a file (the demo's pretrained CLIP): every method starts from its weights."""
    ref = params.clip.pretrained
    return Path(ref) if ref and Path(ref).is_file() else None


def build_plan(params: Params, *, dataset: str, method: str, paths: TrainPaths, data_digest: str,
               digests: dict[Path, str] | None = None) -> dict[str, Any]:
    """The plan of one (dataset, method): seeds, identity, the settings it depends on and its inputs' digests.
    `digests` caches digests across the methods of one dataset."""
    digests = {} if digests is None else digests
    files = method_input_files(params, method, paths)
    inputs = {}
    for f in files:
        if f not in digests:
            digests[f] = artifact_digest(f)
        inputs[str(f)] = digests[f]
    ckpt = local_checkpoint(params)
    if ckpt is not None:
        if ckpt not in digests:
            digests[ckpt] = file_digest(ckpt)
        inputs[str(ckpt)] = digests[ckpt]
    ident = run_identity(params, dataset=dataset, method=method, data_digest=data_digest)
    return {"format": PLAN_FORMAT, "dataset": dataset, "method": method, "seeds": list(params.seeds),
            "config_id": ident["config_id"], "ablation_id": ident["ablation_id"],
            "depends_on": identity_parts(params, dataset=dataset, method=method, data_digest=data_digest),
            "inputs": inputs}


def write_plan(plan: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1, sort_keys=True, default=str) + "\n")


def load_plan(path: Path, *, dataset: str, method: str) -> dict[str, Any]:
    """A plan file, checked against the stage it is given to."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no plan for {dataset}/{method} (run `dvc repro plan@{dataset}`)")
    plan = json.loads(path.read_text())
    if plan.get("format") != PLAN_FORMAT or plan.get("dataset") != dataset or plan.get("method") != method:
        raise ValueError(f"{path}: not the plan of {dataset}/{method} (format {plan.get('format')!r}, "
                         f"{plan.get('dataset')}/{plan.get('method')}); re-run `dvc repro plan@{dataset}`")
    return plan
