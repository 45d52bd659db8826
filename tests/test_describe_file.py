"""The `file` backend: importing JSONL / CSV descriptions keyed by id, path or sha256."""

from __future__ import annotations

import csv
import json

import pytest

from lmmreg.config import ConfigError
from lmmreg.data.manifest import load_manifest
from lmmreg.describe.backends import build_describer
from lmmreg.describe.setting import setting_hash
from lmmreg.stages import describe as stage
from tests.test_describe_stage import make_dataset, make_params, read_jsonl


def test_jsonl_by_id_csv_by_path_and_sha(tmp_path):
    _, paths = make_dataset(tmp_path)
    records = load_manifest(paths["manifest"])[0]
    src = tmp_path / "import.jsonl"
    src.write_text("".join(json.dumps({"id": r.id, "descriptions": [f"{r.class_name} photo", "a  second\nline"]})
                           + "\n" for r in records))
    params = make_params(backend="file", import_file=str(src), options={})
    stage.main(params, **paths)
    out = read_jsonl(paths["out"])
    assert [o["descriptions"] for o in out] == [[f"{r.class_name} photo", "a second line"] for r in records]

    by_path = tmp_path / "import.csv"
    with by_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "description"])
        for r in records:
            w.writerows([[r.path, f"first {r.id}"], [str((paths["raw"] / r.path).resolve()), f"second {r.id}"]])
    params_csv = make_params(backend="file", import_file=str(by_path), options={"key": "path"})
    stage.main(params_csv, **{**paths, "out": tmp_path / "csv.jsonl"})
    for o in read_jsonl(tmp_path / "csv.jsonl"):
        assert o["descriptions"] == [f"first {o['id']}", f"second {o['id']}"]

    by_sha = tmp_path / "sha.csv"
    by_sha.write_text("sha256,answer\n" + "".join(f'{r.sha256},"Sure:\n1. x {r.id}\n2. y"\n' for r in records))
    params_sha = make_params(backend="file", import_file=str(by_sha), options={"key": "sha256"})
    stage.main(params_sha, **{**paths, "out": tmp_path / "sha.jsonl"})
    assert all(o["descriptions"] == [f"x {o['id']}", "y"] for o in read_jsonl(tmp_path / "sha.jsonl"))


def test_missing_image_is_an_error_and_new_content_is_a_new_setting(tmp_path):
    _, paths = make_dataset(tmp_path)
    records = load_manifest(paths["manifest"])[0]
    src = tmp_path / "import.jsonl"
    src.write_text("".join(json.dumps({"id": r.id, "answer": "1. a thing"}) + "\n" for r in records[1:]))
    params = make_params(backend="file", import_file=str(src), options={})
    with pytest.raises(ValueError, match=rf"{records[0].id}: not in .*import.jsonl"):
        stage.main(params, **paths)
    before = setting_hash(params.describe)
    src.write_text(src.read_text() + json.dumps({"id": records[0].id, "answer": "1. the fix"}) + "\n")
    params = make_params(backend="file", import_file=str(src), options={})
    assert setting_hash(params.describe) != before
    stage.main(params, **paths)


@pytest.mark.parametrize("content, match", [
    ('{"id": "a", "answer": "x"}\n{"id": "a", "answer": "y"}\n', r"import.jsonl:2: id 'a' appears twice"),
    ('{"image": "a", "answer": "x"}\n', r"import.jsonl:1: no 'id' field"),
    ('{"id": "a", "descriptions": "not a list"}\n', r"import.jsonl:1: needs 'descriptions'"),
    ('{"id": "a", \n', r"import.jsonl:1: not JSON"),
])
def test_bad_import_file_names_the_line(tmp_path, content, match):
    src = tmp_path / "import.jsonl"
    src.write_text(content)
    with pytest.raises(ValueError, match=match):
        build_describer(make_params(backend="file", import_file=str(src), options={}).describe, raw_root=tmp_path)


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="describe.import_file: .* not found"):
        build_describer(make_params(backend="file", import_file=str(tmp_path / "x.jsonl"), options={}).describe,
                        raw_root=tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ConfigError, match="describe.options.key: invalid value 'name'"):
        build_describer(make_params(backend="file", import_file=str(tmp_path / "x.txt"),
                                    options={"key": "name"}).describe, raw_root=tmp_path)
