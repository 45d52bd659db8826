"""The `file` describer's import file is a DVC dependency taken from params, for real, with no edit of dvc.yaml.

With another backend the dependency is the tracked empty placeholder (`dvc repro` works, nothing to import);
with `describe.backend: file` and `describe.import_file: <file>`, editing the file makes `dvc status` name it
and `dvc repro` re-run describe with the new descriptions.
"""

from __future__ import annotations

import json

import pytest
import yaml

from lmmreg.data.manifest import load_manifest
from tests.conftest import REPO
from tests.dvc_repo import DVC, dvc_params, make_repo, run

pytestmark = pytest.mark.slow


def test_import_file_is_a_dependency_from_params(tmp_path):
    repo = tmp_path / "repo"
    env = make_repo(repo)
    out = run([DVC, "repro", "describe@demo"], repo, env)  # scripted: the placeholder is the dependency
    assert "Running stage 'describe@demo'" in out
    assert "data/imports/none.jsonl" in (repo / "dvc.lock").read_text()

    records, _ = load_manifest(repo / "data/prepared/demo")
    imported = repo / "data/imports/demo.jsonl"

    def write_import(word: str) -> None:
        imported.write_text("".join(json.dumps({"id": r.id, "descriptions": [f"{word} {r.class_name}"]}) + "\n"
                                    for r in records))

    write_import("a picture of")
    params = dvc_params()
    params["describe"].update(backend="file", import_file="data/imports/demo.jsonl", options={"key": "id"})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([DVC, "repro", "describe@demo"], repo, env)
    first = [json.loads(x) for x in (repo / "data/descriptions/demo/descriptions.jsonl").read_text().splitlines()]
    assert [d["descriptions"] for d in first] == [[f"a picture of {r.class_name}"] for r in records]
    assert "Data and pipelines are up to date." in run([DVC, "status", "describe@demo"], repo, env)

    write_import("a drawing of")  # a corrected import: DVC sees it, describe re-runs, the answers follow
    status = run([DVC, "status", "describe@demo"], repo, env)
    assert "modified:" in status and "data/imports/demo.jsonl" in status, status
    assert "Running stage 'describe@demo'" in run([DVC, "repro", "describe@demo"], repo, env)
    second = [json.loads(x) for x in (repo / "data/descriptions/demo/descriptions.jsonl").read_text().splitlines()]
    assert [d["descriptions"] for d in second] == [[f"a drawing of {r.class_name}"] for r in records]
    assert (repo / "dvc.yaml").read_bytes() == (REPO / "dvc.yaml").read_bytes()  # no hand edit
