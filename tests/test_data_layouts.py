"""Layouts: each real folder structure gives the right files, classes (in order) and splits, or a clear error."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lmmreg.data.layouts import build_class_map, list_layout, normalize_class_name, parse_coop_split
from lmmreg.data.splits import load_table
from tests.data_fixtures import (
    BAR_COUNTS,
    ERA_FOLDERS,
    UCF_FIXTURE,
    build_bar_tree,
    build_era_tree,
    build_ucf101_tree,
    write_image,
)


def _counts(layout) -> dict[str, int]:
    return dict(Counter(it.split for it in layout.items))


def test_shipped_ucf101_split_is_the_papers(tmp_path):
    (tmp_path / "UCF-101-midframes").mkdir()
    layout = list_layout("ucf101", tmp_path, {})
    assert _counts(layout) == {"train": 9537, "test": 3783}
    assert len(layout.classes) == 101
    assert layout.classes == load_table("ucf101_classes.json")["classes"]  # labels in classInd order
    assert layout.classes[36] == "handstand pushups"
    assert "UCF-101-midframes/Handstand_Pushups/v_HandStandPushups_g01_c01.jpg" in {it.path for it in layout.items}
    per_class = Counter((it.class_name, it.split) for it in layout.items)
    for name, (trainval, test) in load_table("ucf101_classes.json")["counts_trainval_test"].items():
        assert (per_class[(name, "train")], per_class[(name, "test")]) == (trainval, test)


def test_coop_zhou_split_file_and_midframes_tree(tmp_path):
    build_ucf101_tree(tmp_path, train=3, val=1, test=2)
    layout = list_layout("ucf101", tmp_path, {"split_file": "split_zhou_UCF101.json"})
    assert _counts(layout) == {"train": 5 * 4, "test": 5 * 2}  # val joins train
    assert layout.classes == [normalize_class_name(f) for f in UCF_FIXTURE]
    assert layout.classes[1] == "handstand pushups"
    hs = [it for it in layout.items if it.class_name == "handstand pushups" and it.split == "test"]
    assert hs[0].path == "UCF-101-midframes/Handstand_Pushups/v_HandStandPushups_g01_c01.jpg"
    assert all((tmp_path / it.path).is_file() for it in layout.items)
    assert layout.notes["split_file"].endswith("split_zhou_UCF101.json")


def test_ucf101_class_names_agree_between_coop_and_shipped_spelling():
    rows, classes = parse_coop_split({"train": [["A_B/x.jpg", 0, "Apply_Eye_Makeup"]],
                                      "test": [["A_B/y.jpg", 0, "apply eye makeup"]]}, "s.json")
    assert classes == ["apply eye makeup"] and [r[1] for r in rows] == ["train", "test"]


@pytest.mark.parametrize("split, message", [
    ({"train": []}, "expected keys train, test"),
    ({"train": [["a.jpg", 0]], "test": []}, r"train\[0\]: expected \[path, label, class_name\]"),
    ({"train": [["a.jpg", 0, "x"]], "test": [["a.jpg", 0, "x"]]}, "listed twice"),
    ({"train": [["a.jpg", 0, "x"], ["b.jpg", 0, "y"]], "test": []}, "label 0 is 'x' elsewhere, 'y' here"),
    ({"train": [["a.jpg", 1, "x"]], "test": []}, "without gaps"),
    ({"train": [["../a.jpg", 0, "x"]], "test": []}, "must be relative"),
])
def test_bad_split_files_are_named(split, message):
    with pytest.raises(ValueError, match=message):
        parse_coop_split(split, "my_split.json")


def test_ucf101_missing_split_file_and_unlisted_images(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="nope.json: split file not found"):
        list_layout("ucf101", tmp_path, {"split_file": "nope.json"})
    build_ucf101_tree(tmp_path, train=1, val=0, test=1)
    write_image(tmp_path / "UCF-101-midframes" / "Skijet" / "v_Skijet_g99_c01.jpg", 999)
    layout = list_layout("ucf101", tmp_path, {"split_file": "split_zhou_UCF101.json"})
    assert layout.notes["unlisted_images"] == 1
    assert "not in the split" in caplog.text


def test_bar_real_layout_counts_and_class_from_last_underscore(tmp_path):
    build_bar_tree(tmp_path)
    layout = list_layout("bar", tmp_path, {})
    assert _counts(layout) == {"train": 1941, "test": 654}
    assert layout.classes == ["climbing", "diving", "fishing", "racing", "throwing", "pole vaulting"]
    per_class = Counter((it.class_name, it.split) for it in layout.items)
    assert {c: (per_class[(c, "train")], per_class[(c, "test")]) for c in BAR_COUNTS} == BAR_COUNTS
    pv = {it.path: it for it in layout.items}
    assert pv["train/pole vaulting_0.jpg"].class_name == "pole vaulting"
    assert pv["test/climbing_326.jpg"].split == "test"  # test indices continue after train's


def test_bar_rejects_what_does_not_fit(tmp_path):
    build_bar_tree(tmp_path, {"climbing": (1, 1), "diving": (1, 1)})
    write_image(tmp_path / "train" / "noindex.jpg", 1)
    (tmp_path / "test" / "nested").mkdir()
    with pytest.raises(ValueError, match=r"2 file\(s\) do not fit") as e:
        list_layout("bar", tmp_path, {})
    assert "noindex.jpg: no '_'" in str(e.value) and "nested: a folder" in str(e.value)
    (tmp_path / "train" / "noindex.jpg").unlink()
    (tmp_path / "test" / "nested").rmdir()
    write_image(tmp_path / "train" / "skating_3.jpg", 2)
    with pytest.raises(ValueError, match=r"classes \['skating'\].*options.classes"):
        list_layout("bar", tmp_path, {})


def test_era_folder_names_map_to_the_papers_classes(tmp_path):
    build_era_tree(tmp_path, videos=False)
    layout = list_layout("era", tmp_path, {})
    assert layout.classes == load_table("era_classes.json")["classes"] and len(layout.classes) == 25
    assert layout.notes["class_map"] == ERA_FOLDERS
    assert _counts(layout) == {"train": 25, "test": 25}
    item = next(it for it in layout.items if it.path.startswith("Test/Traffic_Jam/"))
    assert item.class_name == "traffic congestion" and item.split == "test"


def test_era_unknown_folder_lists_all_and_override_fixes_it(tmp_path):
    folders = {"Flood": "flood", "Quake": "post-earthquake", "Crowd": "concert"}
    build_era_tree(tmp_path, videos=False, folders=folders)
    with pytest.raises(ValueError, match=r"folders \['Crowd', 'Quake'\] match no class.*options.class_map"):
        list_layout("era", tmp_path, {})
    layout = list_layout("era", tmp_path, {"class_map": {"Quake": "post-earthquake", "Crowd": "concert"}})
    assert layout.notes["class_map"] == folders
    with pytest.raises(ValueError, match=r"class_map.Crowd: 'crowd' is not one of"):
        list_layout("era", tmp_path, {"class_map": {"Crowd": "crowd"}})


def test_class_map_prefers_the_users_entry():
    m = build_class_map(["Fire", "Traffic_Jam"], ["fire", "traffic congestion", "flood"], {"traffic jam":
                        "traffic congestion"}, {"Fire": "flood"})
    assert m == {"Fire": "flood", "Traffic_Jam": "traffic congestion"}


def test_imagefolder_and_split_folder_names(tmp_path):
    for split in ("Train", "Test"):
        for cls in ("cat", "dog"):
            write_image(tmp_path / split / cls / "a" / f"{cls}.jpg", hash((split, cls)) % 1000)
    (tmp_path / "Train" / "cat" / ".DS_Store").write_bytes(b"x")
    layout = list_layout("imagefolder", tmp_path, {})
    assert layout.classes == ["cat", "dog"] and _counts(layout) == {"train": 2, "test": 2}
    assert "Train/cat/a/cat.jpg" in {it.path for it in layout.items}
    with pytest.raises(FileNotFoundError, match="missing split folder for 'test'"):
        list_layout("imagefolder", tmp_path, {"splits": {"train": "Train", "test": "eval"}})
    with pytest.raises(ValueError, match="options.colour: unknown for layout 'imagefolder'"):
        list_layout("imagefolder", tmp_path, {"colour": 1})


def test_csv_layout(tmp_path):
    rows = ["path,label,split,note", "img/a.jpg,10,train,x", "img/b.jpg,2,train,", "img/c.jpg,2,test,",
            "img/d.jpg,10,test,"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    layout = list_layout("csv", tmp_path, {})
    assert layout.classes == ["2", "10"]  # integer names sort as numbers
    assert [(it.path, it.class_name, it.split) for it in layout.items][:2] == [("img/a.jpg", "10", "train"),
                                                                              ("img/b.jpg", "2", "train")]
    assert list_layout("csv", tmp_path, {"classes": ["10", "2"]}).classes == ["10", "2"]


def test_csv_bad_rows_are_all_listed(tmp_path):
    (tmp_path / "mine.csv").write_text("path,label,split\n/abs.jpg,a,train\nx/../../y.jpg,a,train\n"
                                       "ok.jpg,a,val\nok2.jpg,,test\ndup.jpg,a,train\ndup.jpg,a,test\n")
    with pytest.raises(ValueError) as e:
        list_layout("csv", tmp_path, {"file": "mine.csv"})
    msg = str(e.value)
    for line, what in ((2, "must be a non-empty path"), (3, "must be a non-empty path"), (4, "split 'val'"),
                       (5, "empty label"), (7, "already listed on line 6")):
        assert f"mine.csv:{line}: " in msg and what in msg
    (tmp_path / "nocols.csv").write_text("file,class\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path', 'label', 'split'\]"):
        list_layout("csv", tmp_path, {"file": "nocols.csv"})


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="raw dataset folder not found.*docs/datasets.md"):
        list_layout("bar", tmp_path / "absent", {})
    with pytest.raises(ValueError, match="layout 'coco' is not implemented"):
        list_layout("coco", tmp_path, {})


def test_shipped_tables_are_consistent():
    era = load_table("era_classes.json")
    assert len(era["classes"]) == len(set(era["classes"])) == 25
    assert set(era["aliases"].values()) <= set(era["classes"])
    bar = load_table("bar_classes.json")
    assert {c: tuple(v) for c, v in bar["counts_train_test"].items()} == BAR_COUNTS
    assert json.dumps(bar["classes"]) == json.dumps(list(BAR_COUNTS))
