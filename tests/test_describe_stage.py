"""The describe stage end to end on the demo data: store, resume, settings, too-few policy, shards, merge."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lmmreg.config import parse_params
from lmmreg.data.demo import generate_demo
from lmmreg.data.manifest import load_manifest
from lmmreg.describe.base import Answer
from lmmreg.describe.setting import setting_hash
from lmmreg.describe.store import DescriptionStore, StoreLockedError, load_store_records
from lmmreg.stages import describe as stage
from lmmreg.stages import prepare

ROOT = Path(__file__).resolve().parents[1]


def make_params(**describe):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["demo"].update(n_classes=2, train_per_class=3, test_per_class=2, image_size=32)
    raw["describe"].update(describe)
    return parse_params(raw)


def make_dataset(tmp_path: Path, **describe) -> tuple:
    """A 10-image demo dataset with its manifest; returns (params, stage kwargs)."""
    params = make_params(**describe)
    raw, manifest = tmp_path / "raw", tmp_path / "prepared"
    generate_demo(params.demo, raw)
    prepare.main(params, dataset="demo", raw=raw, out=manifest)
    paths = {"dataset": "demo", "raw": raw, "manifest": manifest, "store": tmp_path / "d" / "store.jsonl",
             "out": tmp_path / "d" / "descriptions.jsonl"}
    return params, paths


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ListDescriber:
    """A backend answering from a function of the item (the stage and the store under test are real)."""

    max_batch = 4

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def describe_batch(self, items):
        self.calls.extend(items)
        return [self.answer(item) for item in items]


def test_scripted_run_resume_and_new_setting(tmp_path):
    params, paths = make_dataset(tmp_path)
    summary = stage.main(params, **paths)
    rows = read_jsonl(paths["out"])
    assert [r["id"] for r in rows] == [r.id for r in load_manifest(paths["manifest"])[0]]
    assert all(1 <= len(r["descriptions"]) <= 10 for r in rows)  # the scripted LMM repeats itself sometimes
    hist = Counter(len(r["descriptions"]) for r in rows)
    assert summary["descriptions_per_image"] == dict(sorted(hist.items())) and summary["errors"] == 0
    assert json.loads((paths["out"].parent / "summary.json").read_text())["images"] == 10
    n_lines = len(read_jsonl(paths["store"]))
    assert n_lines == 10

    again = stage.main(params, **paths)  # same setting: nothing to do
    assert again["run"] == {} and len(read_jsonl(paths["store"])) == n_lines

    params2 = make_params(prompt="Describe the image in 10 short sentences")
    stage.main(params2, **paths)
    settings = Counter(r["setting"] for r in read_jsonl(paths["store"]))
    assert settings == {setting_hash(params.describe): 10, setting_hash(params2.describe): 10}


def test_empty_answer_is_an_error_record_and_rerun_retries(tmp_path, monkeypatch):
    params, paths = make_dataset(tmp_path)
    first = ListDescriber(lambda it: Answer(raw="" if it.image_id.endswith("00000.png") else "1. A shape."))
    monkeypatch.setattr(stage, "build_describer", lambda cfg, raw_root: first)
    with pytest.raises(ValueError, match=r"00000.png: empty answer"):
        stage.main(params, **paths)
    errors = [r for r in read_jsonl(paths["store"]) if r["error"]]
    assert len(errors) >= 1 and all(r["descriptions"] == [] for r in errors)

    second = ListDescriber(lambda it: Answer(raw="1. A shape.\n2. A colour."))
    monkeypatch.setattr(stage, "build_describer", lambda cfg, raw_root: second)
    stage.main(params, **paths)
    assert {it.image_id for it in second.calls} == {r["image_id"] for r in errors}  # only the failed ones


def test_on_too_few_retry_keeps_best_and_fail_raises(tmp_path, monkeypatch):
    params, paths = make_dataset(tmp_path, on_too_few="retry", too_few_retries=2, n_descriptions=3)
    # Attempt 0 gives 1 item, attempt 1 gives 2, attempt 2 gives 1 again: the 2-item answer must win.
    answers = {0: "1. a", 1: "1. a\n2. b", 2: "1. c"}
    backend = ListDescriber(lambda it: Answer(raw=answers[it.attempt]))
    monkeypatch.setattr(stage, "build_describer", lambda cfg, raw_root: backend)
    summary = stage.main(params, **paths)
    assert Counter(it.attempt for it in backend.calls) == {0: 10, 1: 10, 2: 10}
    assert all(r["descriptions"] == ["a", "b"] for r in read_jsonl(paths["out"]))
    assert summary["too_few"] == 10 and summary["run"]["retries"] == 20
    # No attempts left: a re-run does no work.
    backend.calls.clear()
    stage.main(params, **paths)
    assert backend.calls == []

    params_fail, paths_fail = make_dataset(tmp_path / "f", on_too_few="fail", n_descriptions=3)
    monkeypatch.setattr(stage, "build_describer", lambda cfg, raw_root: ListDescriber(lambda it: Answer(raw="1. a")))
    with pytest.raises(ValueError, match="1 descriptions < 3"):
        stage.main(params_fail, **paths_fail)


def test_shards_then_merge(tmp_path):
    params, paths = make_dataset(tmp_path)
    shard_stores = [tmp_path / f"shard{i}.jsonl" for i in range(3)]
    for i, s in enumerate(shard_stores):
        stage.main(params, **{**paths, "store": s, "out": None}, shard=f"{i}/3")
    counts = [len(read_jsonl(s)) for s in shard_stores]
    assert sum(counts) == 10 and not paths["out"].exists()

    with pytest.raises(ValueError, match=r"merge: \d+ image\(s\) have no answer"):
        stage.main(params, **paths, merge=shard_stores[:2])
    shutil_copy(shard_stores[0], tmp_path / "dup.jsonl")
    with pytest.raises(ValueError, match="more than one shard"):
        stage.main(params, **paths, merge=[*shard_stores, tmp_path / "dup.jsonl"])

    summary = stage.main(params, **paths, merge=shard_stores)
    assert summary["described"] == 10 and summary["run"] == {}
    keys = [r["key"] for r in read_jsonl(paths["store"])]
    assert len(keys) == len(set(keys)) == 10
    stage.main(params, **paths, merge=shard_stores)  # merging again adds nothing
    assert len(read_jsonl(paths["store"])) == 10


def shutil_copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


def test_bad_shard_spec(tmp_path):
    params, paths = make_dataset(tmp_path)
    with pytest.raises(ValueError, match="--shard '3/3'"):
        stage.main(params, **paths, shard="3/3")


def test_store_lock_and_torn_line(tmp_path):
    path = tmp_path / "store.jsonl"
    with DescriptionStore(path) as st:
        st.add({"key": "a:s", "setting": "s"})
        with pytest.raises(StoreLockedError, match="another process"):
            DescriptionStore(path)
    with path.open("a") as f:
        f.write('{"key": "b:s", "sett')  # a kill mid-write
    with DescriptionStore(path) as st:
        assert set(st.records) == {"a:s"}
        st.add({"key": "c:s", "setting": "s"})
    assert [r["key"] for r in load_store_records(path)] == ["a:s", "c:s"]
    path.write_text('{"no_key": 1}\n')
    with pytest.raises(ValueError, match=r"store.jsonl:1: not a store record"):
        DescriptionStore(path)


def test_store_records_are_readable_at_once_and_fsynced_a_second_apart_and_on_close(tmp_path, monkeypatch):
    """A record is flushed as it is written (another reader sees it before the next); fsync comes with the first
    record, then with the first one a second or more after the last fsync, and on close."""
    from lmmreg.describe import store as store_mod

    clock = [100.0]
    synced: list[float] = []
    monkeypatch.setattr(store_mod.time, "monotonic", lambda: clock[0])
    real_fsync = os.fsync
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (synced.append(clock[0]), real_fsync(fd)))
    path = tmp_path / "store.jsonl"
    st = DescriptionStore(path)
    for i, t in enumerate([100.0, 100.2, 100.9, 101.0, 101.1, 101.5, 102.4]):
        clock[0] = t
        st.add({"key": f"k{i}:s", "setting": "s"})
        assert [r["key"] for r in load_store_records(path)] == [f"k{j}:s" for j in range(i + 1)]
    assert synced == [100.0, 101.0, 102.4]
    clock[0] = 102.5
    st.close()
    assert synced == [100.0, 101.0, 102.4, 102.5]
    st.close()  # closing twice is harmless
    assert len(synced) == 4
