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

The plan also holds a digest of the train stage's code (`code`: every lmmreg source file `lmmreg.stages.train`
imports, transitively), so the train stages depend on their plan file alone: a change to that code re-runs the
plan stage (whose deps list those files), which rewrites every plan, which re-runs every method; a change to
other code (the report's) re-trains nothing. One dependency per train stage instead of 22 keeps `dvc.lock` about
half as long, and DVC reads and rewrites the whole file for every stage it runs or restores.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmmreg.config import Params
from lmmreg.data.manifest import sha256_file
from lmmreg.digests import artifact_digest
from lmmreg.errors import InputError
from lmmreg.identity import identity_parts, run_identity, uses_class_prompt, uses_lmm
from lmmreg.methods import get_method
from lmmreg.methods.registry import method_modules

PLAN_FORMAT = "lmmreg-plan/1"
TRAIN_MODULE = "lmmreg.stages.train"
SRC = Path(__file__).resolve().parents[1]  # the folder holding the lmmreg package


@dataclass(frozen=True)
class TrainPaths:
    """The train stage's inputs, as dvc.yaml passes them."""

    manifest: Path
    features: Path
    text: Path
    centroids: Path


def method_input_files(params: Params, method: str, paths: TrainPaths) -> list[Path]:
    """The artifact files a method's result depends on (the train stage loads them all; a method reads these)."""
    spec = get_method(method)
    files = [paths.features]  # every method: the cached image features
    if uses_class_prompt(params, method):
        files.append(paths.text / "class_text.pt")
    if uses_lmm(params, method):
        files += [paths.centroids, paths.text / "image_mean.pt"]
        # few-shot centroids come from the K-shot images' own descriptions; train_desc is every description
        if params.train.shots != "all" or "train_desc" in spec.needs:
            files.append(paths.text / "descriptions.pt")
    if spec.reads_alpha and params.train.reg_target == "random_text":  # J_reg's random-word control target
        files.append(paths.text / "random_text.pt")
    if "clip_model" in spec.needs and paths.text / "class_text.pt" not in files:
        files.append(paths.text / "class_text.pt")  # prompt learning runs the text tower these embeddings came from
    return files


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _holds_no_logic(path: Path) -> bool:
    """A package `__init__` with only a docstring and `__version__`: it changes no result."""
    def inert(n: ast.stmt) -> bool:
        if isinstance(n, ast.Expr):
            return isinstance(n.value, ast.Constant)
        return isinstance(n, ast.Assign) and [getattr(t, "id", None) for t in n.targets] == ["__version__"]

    return all(inert(n) for n in ast.parse(path.read_text()).body)


def source_files(module: str, *also: str) -> list[Path]:
    """Every lmmreg source file `module` (and the modules `also`) imports, transitively, sorted: lazy (in-function)
    imports included, and modules named by a constant string (a registry that imports a member by name)."""
    seen: set[Path] = set()
    todo = [module, *also]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a.b.c runs a/__init__, a/b/__init__
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmmreg"):
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("lmmreg")]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("lmmreg.") \
                    and _module_file(node.value) is not None:
                todo.append(node.value)
    return sorted(p for p in seen if not (p.name == "__init__.py" and _holds_no_logic(p)))


@functools.cache
def code_digest(module: str = TRAIN_MODULE) -> dict[str, Any]:
    """sha256 over the path and bytes of each of `module`'s source files (source_files); for the train stage, with
    every method's module, which it loads by name from the registry (lmmreg.methods.registry)."""
    files = [f.relative_to(SRC).as_posix() for f in
             source_files(module, *(method_modules() if module == TRAIN_MODULE else ()))]
    return {"module": module, "files": files, "sha256": files_digest(files)}


def files_digest(files: list[str]) -> str:
    """sha256 over the path (relative to SRC) and bytes of each file, in the given order; OSError if one is gone."""
    h = hashlib.sha256()
    for name in files:
        data = (SRC / name).read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


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
            digests[ckpt] = sha256_file(ckpt)
        inputs[str(ckpt)] = digests[ckpt]
    ident = run_identity(params, dataset=dataset, method=method, data_digest=data_digest)
    return {"format": PLAN_FORMAT, "dataset": dataset, "method": method, "seeds": list(params.seeds),
            "config_id": ident["config_id"], "ablation_id": ident["ablation_id"],
            "depends_on": identity_parts(params, dataset=dataset, method=method, data_digest=data_digest),
            "inputs": inputs, "code": code_digest()}


def write_plan(plan: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1, sort_keys=True, default=str) + "\n")


def load_plan(path: Path, *, dataset: str, method: str) -> dict[str, Any]:
    """A plan file, checked against the stage it is given to."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no plan for {dataset}/{method} (run `dvc repro plan@{dataset}`)")
    plan = json.loads(path.read_text())
    if plan.get("format") != PLAN_FORMAT or plan.get("dataset") != dataset or plan.get("method") != method:
        raise InputError(f"{path}: not the plan of {dataset}/{method} (format {plan.get('format')!r}, "
                         f"{plan.get('dataset')}/{plan.get('method')}); re-run `dvc repro plan@{dataset}`")
    # The plan's own file list is hashed again, not the import graph walked again (code_digest: 0.16 s of
    # every train stage on 2 cores). It catches the same changes: code reaches the train stage only through a file
    # on that list (a new import, or a new method in the registry, edits one), and a file gone fails the read.
    code = plan.get("code") or {}
    files = code.get("files")
    try:
        same = (code.get("module") == TRAIN_MODULE and isinstance(files, list) and bool(files)
                and files_digest(files) == code.get("sha256"))
    except OSError:
        same = False
    if not same:
        raise InputError(f"{path}: planned for other code than the train stage's now (its sources changed since "
                         f"plan@{dataset} ran: {TRAIN_MODULE}'s {len(files or [])} files); re-run `dvc repro`")
    return plan
