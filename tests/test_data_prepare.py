"""The `prepare` stage end to end on fixtures of each real layout: counts, labels, ids, frames, and every error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import yaml

import lmmreg.data.video as video
from lmmreg.config import DemoConfig
from lmmreg.data.checks import DatasetError
from lmmreg.data.demo import generate_demo
from lmmreg.data.manifest import load_manifest, resolve_image_root
from lmmreg.stages.prepare import main as prepare
from tests.data_fixtures import (
    REPO,
    build_bar_tree,
    build_era_tree,
    build_ucf101_tree,
    image_bytes,
    make_params,
    write_image,
    write_video,
)

PAPER_BAR = {"train": 1941, "test": 654, "classes": 6}
PAPER_UCF = {"train": 9537, "test": 3783, "classes": 101}
PAPER_ERA = {"train": 1473, "test": 1391, "classes": 25}


def _split_counts(records) -> dict[str, int]:
    return dict(Counter(r.split for r in records))


def test_bar_gives_the_papers_counts(tmp_path, caplog):
    raw, out = build_bar_tree(tmp_path / "raw"), tmp_path / "prepared"
    params = make_params({"bar": {"layout": "bar", "expected": PAPER_BAR}})
    report = prepare(params, dataset="bar", raw=raw, out=out)
    assert report["counts"] == PAPER_BAR and report["warnings"] == [] and report["skipped"] == []
    records, classes = load_manifest(out)
    assert classes == ["climbing", "diving", "fishing", "racing", "throwing", "pole vaulting"]
    assert _split_counts(records) == {"train": 1941, "test": 654}
    pv = next(r for r in records if r.id == "train/pole vaulting_0.jpg")
    assert (pv.path, pv.label, pv.class_name, pv.split, pv.width, pv.height) == (
        "train/pole vaulting_0.jpg", 5, "pole vaulting", "train", 8, 8)
    assert len(pv.sha256) == 64 and resolve_image_root(out, raw) == raw
    assert "vs" not in caplog.text


def test_ucf101_zhou_split_and_count_warning(tmp_path, caplog):
    raw, out = build_ucf101_tree(tmp_path / "raw", train=2, val=1, test=1), tmp_path / "prepared"
    params = make_params({"ucf101": {"layout": "ucf101", "options": {"split_file": "split_zhou_UCF101.json"},
                                     "expected": PAPER_UCF}})
    report = prepare(params, dataset="ucf101", raw=raw, out=out)
    records, classes = load_manifest(out)
    assert _split_counts(records) == {"train": 15, "test": 5} and len(classes) == 5
    r = next(r for r in records if "HandStand" in r.id and r.split == "test")
    assert r.id == "UCF-101-midframes/Handstand_Pushups/v_HandStandPushups_g01_c01.jpg"
    assert r.class_name == "handstand pushups" and r.label == 1
    assert "ucf101: 15 train vs 9537 in the paper (-9522, -99.8%)" in report["warnings"]
    assert "ucf101: 5 classes vs 101 in the paper (-96" in caplog.text


def _era_params(**options):
    return make_params({"era": {"layout": "era", "options": options, "expected": PAPER_ERA}})


def test_era_videos_become_middle_frames_beside_the_manifest(tmp_path, monkeypatch):
    raw, out = build_era_tree(tmp_path / "raw"), tmp_path / "prepared"
    report = prepare(_era_params(), dataset="era", raw=raw, out=out)
    records, classes = load_manifest(out)
    assert len(classes) == 25 and _split_counts(records) == {"train": 25, "test": 25}
    assert report["image_root"] == "manifest" and report["frame"] == "middle"
    assert report["class_map"]["Traffic_Jam"] == "traffic congestion"
    assert "era: 25 train vs 1473 in the paper (-1448" in report["warnings"][0]
    r = next(r for r in records if r.id == "Test/Traffic_Jam/Traffic_Jam_100_01.mp4")
    assert r.path == "frames/Test/Traffic_Jam/Traffic_Jam_100_01.png" and r.class_name == "traffic congestion"
    root = resolve_image_root(out, raw)
    assert root == out and (root / r.path).is_file() and (r.width, r.height) == (32, 32)

    calls: list = []
    monkeypatch.setattr(video, "read_frame", lambda *a, **k: calls.append(a) or pytest.fail("decoded again"))
    prepare(_era_params(), dataset="era", raw=raw, out=out)  # re-run: every frame comes from the cache
    assert load_manifest(out) == (records, classes) and calls == []


def test_era_frame_cache_survives_dvc_emptying_the_output(tmp_path, monkeypatch):
    raw, out, cache = build_era_tree(tmp_path / "raw"), tmp_path / "prepared", tmp_path / "frame_cache"
    prepare(_era_params(frame="first"), dataset="era", raw=raw, out=out, frame_cache=cache)
    first = load_manifest(out)
    shutil.rmtree(out)  # what `dvc repro` does to a stage's outputs before running it again
    monkeypatch.setattr(video, "read_frame", lambda *a, **k: pytest.fail("decoded again"))
    prepare(_era_params(frame="first"), dataset="era", raw=raw, out=out, frame_cache=cache)
    assert load_manifest(out) == first
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["Test", "Train"]


def test_era_frames_tree_reads_images_from_raw(tmp_path):
    raw, out = build_era_tree(tmp_path / "raw", videos=False), tmp_path / "prepared"
    report = prepare(_era_params(), dataset="era", raw=raw, out=out)
    records, _ = load_manifest(out)
    assert report["image_root"] == "raw" and resolve_image_root(out, raw) == raw
    r = next(r for r in records if r.class_name == "non-event" and r.split == "test")
    assert r.id == r.path == "Test/NonEvent/NonEvent_100_01.jpg"


@pytest.mark.slow
def test_features_stage_reads_era_frames_unchanged(tmp_path):
    from lmmreg.artifacts import load_artifact
    from lmmreg.stages.features import main as features

    raw, out = build_era_tree(tmp_path / "raw"), tmp_path / "prepared"
    params = _era_params()
    prepare(params, dataset="era", raw=raw, out=out)
    features(params, raw=raw, manifest=out, out=tmp_path / "era.pt", workers=0)
    art = load_artifact(tmp_path / "era.pt")
    records, _ = load_manifest(out)
    assert art.ids == [r.id for r in records] and art.tensors["feat"].shape[0] == 50


def _corrupt(tmp_path, dataset):
    """A fixture of `dataset` with two bad files (one per split); returns (params, raw, bad paths, n good)."""
    raw = tmp_path / "raw"
    if dataset == "bar":
        build_bar_tree(raw, {"climbing": (2, 2), "pole vaulting": (2, 2)})
        bad = [raw / "train/pole vaulting_1.jpg", raw / "test/climbing_3.jpg"]
        src = {"layout": "bar", "options": {"classes": ["climbing", "pole vaulting"]}}
    elif dataset == "ucf101":
        build_ucf101_tree(raw, train=2, val=0, test=1)
        bad = [raw / "UCF-101-midframes/Handstand_Pushups/v_HandStandPushups_g08_c01.jpg",
               raw / "UCF-101-midframes/YoYo/v_YoYo_g01_c01.jpg"]
        src = {"layout": "ucf101", "options": {"split_file": "split_zhou_UCF101.json"}}
    elif dataset == "era":
        build_era_tree(raw, per_split=2, folders={"Flood": "flood", "Fire": "fire"})
        bad = [raw / "Train/Fire/Fire_001_01.mp4", raw / "Test/Flood/Flood_100_01.mp4"]
        src = {"layout": "era", "options": {"classes": ["flood", "fire"]}}
    else:
        for i, (split, cls) in enumerate([(s, c) for s in ("train", "test") for c in ("a", "b") for _ in range(2)]):
            write_image(raw / split / cls / f"{i}.jpg", i)
        rows = [f"{p.relative_to(raw).as_posix()},{p.parent.name},{p.parent.parent.name}" for p in
                sorted(raw.rglob("*.jpg"))]
        (raw / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
        bad = [raw / "train/b/2.jpg", raw / "test/a/5.jpg"]
        src = {"layout": dataset}
    n = len(list(p for p in raw.rglob("*") if p.suffix in (".jpg", ".mp4")))
    bad[0].write_bytes(b"")
    bad[1].write_bytes(bad[1].read_bytes()[: len(bad[1].read_bytes()) // 3])
    return make_params({dataset: src}), raw, bad, n - 2


@pytest.mark.parametrize("dataset", ["bar", "ucf101", "era", "imagefolder", "csv"])
def test_corrupt_files_stop_prepare_with_every_path(tmp_path, dataset):
    params, raw, bad, _ = _corrupt(tmp_path, dataset)
    with pytest.raises(DatasetError, match=r"2 unusable file\(s\)") as e:
        prepare(params, dataset=dataset, raw=raw, out=tmp_path / "prepared")
    assert f"{bad[0]}: zero-byte file" in str(e.value)
    # a cut mp4 loses its index (moov atom) so FFmpeg finds no stream in it; a cut JPEG fails to decode
    assert f"{bad[1]}: {'no video stream' if dataset == 'era' else 'cannot decode'}" in str(e.value)
    assert not (tmp_path / "prepared" / "manifest.csv").exists()


@pytest.mark.parametrize("dataset", ["bar", "ucf101", "era", "imagefolder", "csv"])
def test_skip_records_each_dropped_file(tmp_path, dataset):
    params, raw, bad, n_good = _corrupt(tmp_path, dataset)
    params = make_params({dataset: params.source(dataset).__dict__}, prepare={"on_bad_image": "skip"})
    out = tmp_path / "prepared"
    prepare(params, dataset=dataset, raw=raw, out=out)
    report = json.loads((out / "prepare_report.json").read_text())
    assert sorted((s["path"], s["reason"].split(" (")[0]) for s in report["skipped"]) == sorted([
        (str(bad[0]), "zero-byte file"), (str(bad[1]), "no video stream" if dataset == "era" else "cannot decode")])
    assert {s["split"] for s in report["skipped"]} == {"train", "test"}
    records, _ = load_manifest(out)
    assert len(records) == n_good
    assert not {str(raw / r.id) for r in records} & {str(b) for b in bad}


def _imagefolder(raw, spec: dict[tuple[str, str], int]):
    seed = 0
    for (split, cls), n in spec.items():
        for k in range(n):
            write_image(raw / split / cls / f"{k}.jpg", seed := seed + 1)


def test_train_test_duplicates_are_an_error(tmp_path):
    raw = tmp_path / "raw"
    _imagefolder(raw, {("train", "a"): 2, ("test", "a"): 1})
    shutil.copyfile(raw / "train/a/1.jpg", raw / "test/a/copy.jpg")
    with pytest.raises(DatasetError, match="byte-identical images in train and test") as e:
        prepare(make_params({"mine": {"layout": "imagefolder"}}), dataset="mine", raw=raw, out=tmp_path / "o")
    assert f"{raw / 'test/a/copy.jpg'}, {raw / 'train/a/1.jpg'}" in str(e.value)


def test_class_problems_are_found_before_any_image_is_read(tmp_path):
    raw = tmp_path / "raw"
    _imagefolder(raw, {("train", "a"): 1, ("test", "a"): 1, ("test", "only_test"): 1})
    (raw / "train/a/0.jpg").write_bytes(b"")  # would be an error too, but the file list is checked first
    with pytest.raises(DatasetError) as e:
        prepare(make_params({"mine": {"layout": "imagefolder"}}), dataset="mine", raw=raw, out=tmp_path / "o")
    assert "class 'only_test' has no training images" in str(e.value)
    assert "appears in test but not in train" in str(e.value) and "zero-byte" not in str(e.value)


def test_skipping_can_empty_a_class(tmp_path):
    raw = tmp_path / "raw"
    _imagefolder(raw, {("train", "a"): 1, ("train", "b"): 1, ("test", "a"): 1, ("test", "b"): 1})
    (raw / "train/b/0.jpg").write_bytes(b"")
    params = make_params({"mine": {"layout": "imagefolder"}}, prepare={"on_bad_image": "skip"})
    with pytest.raises(DatasetError, match=r"class 'b' has no training images \(after skipping unusable files\)"):
        prepare(params, dataset="mine", raw=raw, out=tmp_path / "o")


def test_unsupported_and_oversized_files_are_listed(tmp_path):
    raw = tmp_path / "raw"
    _imagefolder(raw, {("train", "a"): 2, ("test", "a"): 1})
    (raw / "train/a/notes.txt").write_text("hello")
    write_image(raw / "train/a/big.png", 7, size=(200, 100), fmt="PNG")
    params = make_params({"mine": {"layout": "imagefolder"}}, prepare={"max_image_pixels": 10_000})
    with pytest.raises(DatasetError) as e:
        prepare(params, dataset="mine", raw=raw, out=tmp_path / "o")
    assert f"{raw / 'train/a/notes.txt'}: unsupported format '.txt'" in str(e.value)
    assert f"{raw / 'train/a/big.png'}: 200x100 = 20000 pixels exceeds the limit 10000" in str(e.value)


def test_videos_and_images_do_not_mix(tmp_path):
    raw = tmp_path / "raw"
    _imagefolder(raw, {("train", "flood"): 1, ("test", "flood"): 1})
    write_video(raw / "train/flood/v.mp4")
    with pytest.raises(DatasetError, match="1 videos and 2 other files"):
        prepare(make_params({"era": {"layout": "era", "options": {"classes": ["flood"]}}}), dataset="era",
                raw=raw, out=tmp_path / "o")


def test_demo_layout_still_works(tmp_path):
    raw = tmp_path / "raw"
    generate_demo(DemoConfig(n_classes=3, train_per_class=2, test_per_class=1, image_size=16), raw)
    report = prepare(make_params({"demo": {"layout": "demo"}}), dataset="demo", raw=raw, out=tmp_path / "o")
    records, classes = load_manifest(tmp_path / "o")
    assert classes == ["balloon festival", "meadow picnic", "beach day"]
    assert report["counts"] == {"train": 6, "test": 3, "classes": 3} and len(records) == 9


def test_unknown_expected_count_fails_before_reading(tmp_path):
    params = make_params({"bar": {"layout": "bar", "expected": {"val": 3}}})
    with pytest.raises(ValueError, match="sources.bar.expected.val: unknown count"):
        prepare(params, dataset="bar", raw=tmp_path / "absent", out=tmp_path / "o")


def test_cli_exits_with_the_bad_path(tmp_path):
    raw = tmp_path / "raw"
    _imagefolder(raw, {("train", "a"): 1, ("test", "a"): 1})
    (raw / "test/a/1.jpg").write_bytes(image_bytes(5)[:50])
    raw_params = yaml.safe_load((REPO / "params.yaml").read_text())
    raw_params["sources"]["mine"] = {"layout": "imagefolder"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "lmmreg.stages.prepare", "--params", str(tmp_path / "params.yaml"),
                           "--dataset", "mine", "--raw", str(raw), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert f"{raw / 'test/a/1.jpg'}: cannot decode" in proc.stderr


@pytest.mark.slow
def test_ucf101_full_shipped_split_gives_the_papers_counts(tmp_path):
    from lmmreg.data.splits import load_table

    raw, out = tmp_path / "raw", tmp_path / "prepared"
    split = load_table("ucf101_split.json")
    for seed, (rel, _, _) in enumerate(e for key in ("train", "val", "test") for e in split[key]):
        write_image(raw / "UCF-101-midframes" / rel, seed, size=(4, 4))
    report = prepare(make_params({"ucf101": {"layout": "ucf101", "expected": PAPER_UCF}}), dataset="ucf101",
                     raw=raw, out=out)
    assert report["counts"] == PAPER_UCF and report["warnings"] == []
    records, classes = load_manifest(out)
    assert classes == load_table("ucf101_classes.json")["classes"]
    assert _split_counts(records) == {"train": 9537, "test": 3783}
