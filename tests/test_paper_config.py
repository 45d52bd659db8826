"""Every config under configs/ runs under DVC as it is: DVC reads the raw YAML, not `load_params` with its defaults.

A key a stage names under `params:` but the file lacks stops `dvc repro` at that stage ("Parameters '...' are
missing from 'params.yaml'"), after its command ran. These tests read the files as DVC does, and once through
DVC's own code (`ParamsDependency.get_hash`, what `dvc repro` calls when it saves a stage).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PARAM_FILES = [REPO / "params.yaml", *sorted(p for p in (REPO / "configs").glob("*.yaml")
                                             if "blocks" not in yaml.safe_load(p.read_text()))]
# Maps whose keys depend on another value (the describer backend, the dataset layout): each backend or layout
# checks its own options, and the demo's scripted `noise` is unknown to the openai backend.
FREE_FORM = ("describe.options", "sources.*.options")


def raw_keys(tree: dict, prefix: str = "") -> set[str]:
    """Dotted paths of every mapping key, as DVC addresses params (`train.shots`); lists are leaves."""
    out = set()
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict):
            out |= raw_keys(v, key + ".")
    return out


def free_form(key: str) -> bool:
    parts = key.split(".")
    return any(len(parts) > len(f.split(".")) and all(a in ("*", b) for a, b in zip(f.split("."), parts, strict=False))
               for f in FREE_FORM)


def stage_params(raw: dict) -> dict[str, set[str]]:
    """{stage name: params it names}, foreach stages expanded over the file's `datasets` as DVC does."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in stages.items():
        if "foreach" in st:
            for item in raw["datasets"]:
                names = [p if isinstance(p, str) else next(iter(p)) for p in st["do"].get("params", [])]
                out[f"{name}@{item}"] = {p.replace("${item}", item) for p in names}
        else:
            out[name] = {p if isinstance(p, str) else next(iter(p)) for p in st.get("params", [])}
    return out


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_param_a_stage_names_is_in_the_raw_file(path):
    raw = yaml.safe_load(path.read_text())
    keys = raw_keys(raw)
    missing = {st: sorted(p for p in names if p not in keys) for st, names in stage_params(raw).items()}
    assert not {st: m for st, m in missing.items() if m}, f"{path.name} lacks keys that dvc.yaml's stages name"


def test_paper_config_holds_every_key_of_the_demo():
    """A section DVC hashes whole (`train`, `clip`, `describe`) then means the same thing in both files."""
    demo = raw_keys(yaml.safe_load((REPO / "params.yaml").read_text()))
    paper = raw_keys(yaml.safe_load((REPO / "configs/paper.yaml").read_text()))
    assert sorted(k for k in demo - paper if not free_form(k)) == []
    assert sorted(k for k in paper - demo if not free_form(k)) == []


def test_study_grid_keys_exist_in_every_params_file():
    """`dvc exp run -S key=value` on a key the file lacks adds it silently: a typo would be a new param."""
    study = yaml.safe_load((REPO / "configs/study.yaml").read_text())
    wanted = {k for block in study["blocks"] for k in block["grid"]}
    for path in PARAM_FILES:
        raw = yaml.safe_load(path.read_text())
        keys = raw_keys(raw)
        scripted_only = {"describe.options.noise"} if raw["describe"]["backend"] != "scripted" else set()
        assert wanted - keys - scripted_only == set(), path.name


@pytest.mark.parametrize("datasets", [["bar"], ["ucf101", "era", "bar"]])
def test_dvc_resolves_the_paper_params(tmp_path, datasets):
    """DVC itself, on a copy with configs/paper.yaml as params.yaml: every stage's params hash as on save.

    `dvc status` reports a missing param only as "deleted" and `dvc repro --dry` stops earlier at the first
    missing data folder, so neither resolves them all; `ParamsDependency.get_hash` is the call that failed."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    raw = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    raw["datasets"] = datasets
    shutil.copy2(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    Repo.init(str(tmp_path), no_scm=True)
    with Repo(str(tmp_path)) as repo:
        names = [s.name for s in repo.index.stages]
        checked = 0
        for stage in repo.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    dep.get_hash()  # raises MissingParamsError naming the key
                    checked += len(dep.params)
    assert {f"features@{d}" for d in datasets} <= set(names) and checked > 40


def test_missing_param_is_caught_by_dvc(tmp_path):
    """The same check fails on the file that shipped before: it is not vacuous."""
    from dvc.dependency.param import MissingParamsError, ParamsDependency
    from dvc.repo import Repo

    raw = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    del raw["clip"]["augment_views"]
    shutil.copy2(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    Repo.init(str(tmp_path), no_scm=True)
    with Repo(str(tmp_path)) as repo, pytest.raises(MissingParamsError, match="clip.augment_views"):
        for stage in repo.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    dep.get_hash()


def test_config_files_load():
    from lmmreg.config import load_params

    for path in PARAM_FILES:
        load_params(Path(path))
