"""The `coop` layout (issue 32) on tiny copies of CoOp's datasets in their real formats, through the real `prepare`.

Each builder copies one dataset's layout as CoOp's DATASETS.md and datasets/*.py read it: OxfordPets (a split file,
flat images/), SUN397 (nested class paths, one class three folders deep), FGVCAircraft (text lists, no split file),
ImageNet (class folders + classnames.txt, no val split), EuroSAT (the newer zip's EuroSAT_RGB/ folder) and
StanfordCars (paths from the dataset's root). Then: a partial download, a split mismatch and an empty download are
told apart, and every missing file is named.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from lmmreg.config import TrainConfig, load_params
from lmmreg.data.checks import DatasetError
from lmmreg.data.layouts import list_layout
from lmmreg.data.manifest import load_manifest, manifest_digest
from lmmreg.stages.prepare import main as prepare
from tests.data_fixtures import REPO, make_params, write_image

# OxfordPets: cats' breeds capitalised, dogs' lower case in the file names; CoOp's names are lower case
PETS = ["Abyssinian", "american_bulldog", "Bengal", "great_pyrenees"]
# SUN397: <letter>/<class>[/<sub-class>]; CoOp's name reverses the folders after the letter
SUN = {"a/abbey": "abbey", "b/bus_interior": "bus_interior", "c/church/indoor": "indoor church"}
AIRCRAFT = ["707-320", "A300B4", "Cessna 172", "F/A-18"]
IMAGENET = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark"}
EUROSAT = {"AnnualCrop": "Annual Crop Land", "Highway": "Highway or Road", "SeaLake": "Sea or Lake"}

_seed = iter(range(50_000, 10**6))


def _write_split(path: Path, split: dict) -> Path:
    path.write_text(json.dumps(split))
    return path


def build_oxford_pets(root: Path, *, train: int = 3, val: int = 1, test: int = 2) -> Path:
    """`images/<Breed>_<n>.jpg`, `annotations/`, `split_zhou_OxfordPets.json` (paths relative to images/)."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, breed in enumerate(PETS):
        n = 0
        for key, k in (("train", train), ("val", val), ("test", test)):
            for _ in range(k):
                n += 1
                write_image(root / "images" / f"{breed}_{n}.jpg", next(_seed))
                split[key].append([f"{breed}_{n}.jpg", label, breed.lower()])
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/trainval.txt").write_text("Abyssinian_1 1 1 1\n")
    _write_split(root / "split_zhou_OxfordPets.json", split)
    return root


def build_sun397(root: Path, *, per_split: int = 2) -> Path:
    """`SUN397/<letter>/<class>[/<sub>]/sun_<id>.jpg`, the Partitions' text files and `split_zhou_SUN397.json`."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, (folder, name) in enumerate(SUN.items()):
        for key in split:
            for _ in range(per_split):
                rel = f"{folder}/sun_{next(_seed):08x}.jpg"
                write_image(root / "SUN397" / rel, next(_seed))
                split[key].append([rel, label, name])
    (root / "ClassName.txt").write_text("".join(f"/{f}\n" for f in SUN))
    (root / "Training_01.txt").write_text("".join(f"/{p}\n" for p, _, _ in split["train"] + split["val"]))
    _write_split(root / "split_zhou_SUN397.json", split)
    return root


def build_fgvc_aircraft(root: Path, *, per_split: int = 2) -> Path:
    """The archive's `data/` folder: `images/<7 digits>.jpg`, `variants.txt`, `images_variant_<split>.txt` and the
    family / manufacturer lists CoOp does not read."""
    image_id = 1_000_000
    for key in ("train", "val", "test"):
        lines = []
        for variant in AIRCRAFT:
            for _ in range(per_split):
                image_id += 17
                write_image(root / "images" / f"{image_id:07d}.jpg", next(_seed))
                lines.append(f"{image_id:07d} {variant}\n")
        (root / f"images_variant_{key}.txt").write_text("".join(lines))
        (root / f"images_family_{key}.txt").write_text("".join(f"{ln.split()[0]} Boeing 707\n" for ln in lines))
    (root / "variants.txt").write_text("".join(f"{v}\n" for v in AIRCRAFT))
    (root / "families.txt").write_text("Boeing 707\n")
    (root / "images_variant_trainval.txt").write_text("")
    return root


def build_imagenet(root: Path, *, train: int = 3, test: int = 2) -> Path:
    """`images/train/<wnid>/<wnid>_<n>.JPEG`, `images/val/<wnid>/ILSVRC2012_val_<n>.JPEG`, `classnames.txt`."""
    n_val = 0
    for wnid in IMAGENET:
        for k in range(train):
            write_image(root / f"images/train/{wnid}/{wnid}_{1000 + k}.JPEG", next(_seed))
        for _ in range(test):
            n_val += 1
            write_image(root / f"images/val/{wnid}/ILSVRC2012_val_{n_val:08d}.JPEG", next(_seed))
    (root / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in IMAGENET.items()))
    return root


def build_eurosat(root: Path, *, folder: str = "EuroSAT_RGB") -> Path:
    """`<folder>/<Class>/<Class>_<n>.jpg` (the newer zip unpacks to EuroSAT_RGB/, CoOp's to 2750/) + CoOp's split
    file, whose names are CoOp's rewrites (`Annual Crop Land`)."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, (cls, name) in enumerate(EUROSAT.items()):
        for n, key in enumerate(("train", "train", "val", "test"), start=1):
            write_image(root / folder / cls / f"{cls}_{n}.jpg", next(_seed))
            split[key].append([f"{cls}/{cls}_{n}.jpg", label, name])
    _write_split(root / "split_zhou_EuroSAT.json", split)
    return root


def _coop(options: dict, expected: dict | None = None, **prepare_cfg):
    src = {"layout": "coop", "options": options, **({"expected": expected} if expected else {})}
    return make_params({"ds": src}, prepare=prepare_cfg or None)


def _splits(records) -> dict[str, int]:
    return dict(Counter(r.split for r in records))


# ---------------------------------------------------------------------------------------------- split files


def test_oxford_pets_keeps_its_val_split_and_names_from_the_file(tmp_path):
    raw, out = build_oxford_pets(tmp_path / "oxford_pets"), tmp_path / "prepared"
    want = {"train": 12, "val": 4, "test": 8, "classes": 4}
    report = prepare(_coop({"split_file": "split_zhou_OxfordPets.json", "image_dir": "images"}, want),
                     dataset="ds", raw=raw, out=out)
    assert report["counts"] == want and report["warnings"] == [] and report["skipped"] == []
    records, classes = load_manifest(out)
    assert _splits(records) == {"train": 12, "val": 4, "test": 8}
    assert classes == ["abyssinian", "american bulldog", "bengal", "great pyrenees"]  # `_` read as CoOp's prompts do
    r = next(r for r in records if r.id == "images/american_bulldog_4.jpg")
    assert (r.split, r.label, r.class_name, len(r.sha256)) == ("val", 1, "american bulldog", 64)
    found = report["found"]
    assert found["verdict"] == "complete" and found["listed"] == {"train": 12, "val": 4, "test": 8}
    assert found["present"] == 24 and found["missing"] == 0 and found["first_missing"] == []
    assert report["manifest_digest"] == manifest_digest(out)
    assert len(report["split_file_sha256"]) == 64 and report["format"] == "split_json"


def test_expected_counts_are_checked_val_included(tmp_path, caplog):
    raw, out = build_oxford_pets(tmp_path / "oxford_pets"), tmp_path / "prepared"
    report = prepare(_coop({"split_file": "split_zhou_OxfordPets.json"},
                           {"train": 2944, "val": 736, "test": 3669, "classes": 37}), dataset="ds", raw=raw, out=out)
    assert "ds: 4 val vs 736 in the paper (-732, -99.5%)" in report["warnings"]
    assert "ds: 4 classes vs 37 in the paper" in caplog.text


def test_sun397_nested_class_paths(tmp_path):
    raw, out = build_sun397(tmp_path / "sun397"), tmp_path / "prepared"
    report = prepare(_coop({"split_file": "split_zhou_SUN397.json", "image_dir": "SUN397"}), dataset="ds", raw=raw,
                     out=out)
    records, classes = load_manifest(out)
    assert classes == ["abbey", "bus interior", "indoor church"]
    church = [r for r in records if r.class_name == "indoor church"]
    assert len(church) == 6 and all(r.id.startswith("SUN397/c/church/indoor/sun_") for r in church)
    assert report["counts"] == {"train": 6, "test": 6, "classes": 3, "val": 6}


def test_sun397_without_its_split_file_names_it_and_why_it_cannot_be_rebuilt(tmp_path):
    raw = build_sun397(tmp_path / "sun397")
    (raw / "split_zhou_SUN397.json").unlink()
    with pytest.raises(DatasetError, match=r"split_zhou_SUN397\.json: split file not found") as e:
        prepare(_coop({"split_file": "split_zhou_SUN397.json", "image_dir": "SUN397"}), dataset="ds", raw=raw,
                out=tmp_path / "prepared")
    assert "DATASETS.md#sun397" in str(e.value) and "Training_01.txt" in str(e.value)


def test_the_image_folder_is_found_when_not_given(tmp_path):
    """EuroSAT's newer zip unpacks to EuroSAT_RGB/ (CoOp's: 2750/); StanfordCars' paths start at the root."""
    raw = build_eurosat(tmp_path / "eurosat")
    layout = list_layout("coop", raw, {})  # the one split_zhou_*.json, the folder that holds its files
    assert layout.notes["found"]["image_dir"] == "EuroSAT_RGB" and layout.notes["found"]["verdict"] == "complete"
    assert layout.classes == ["Annual Crop Land", "Highway or Road", "Sea or Lake"]  # CoOp's rewrites, case kept
    cars = tmp_path / "stanford_cars"
    split = {"train": [["cars_train/00001.jpg", 0, "2012 Tesla Model S"]], "val": [],
             "test": [["cars_test/00001.jpg", 0, "2012 Tesla Model S"]]}
    for p, _, _ in split["train"] + split["test"]:
        write_image(cars / p, next(_seed))
    write_image(cars / "devkit_extra/unrelated.jpg", next(_seed))
    _write_split(cars / "split_zhou_StanfordCars.json", split)
    layout = list_layout("coop", cars, {"split_file": "split_zhou_StanfordCars.json"})
    assert [it.path for it in layout.items] == ["cars_train/00001.jpg", "cars_test/00001.jpg"]
    assert layout.notes["found"]["unlisted"] == 1  # the stray image is counted, named, ignored


# ------------------------------------------------------------------------------------- the two without a file


def test_fgvc_aircraft_reads_its_text_lists(tmp_path):
    raw, out = build_fgvc_aircraft(tmp_path / "fgvc_aircraft"), tmp_path / "prepared"
    report = prepare(_coop({"format": "fgvc_aircraft"}, {"train": 8, "val": 8, "test": 8, "classes": 4}),
                     dataset="ds", raw=raw, out=out)
    records, classes = load_manifest(out)
    assert classes == AIRCRAFT  # variants.txt's order; `F/A-18` and `Cessna 172` kept whole
    assert _splits(records) == {"train": 8, "val": 8, "test": 8} and report["warnings"] == []
    assert all(r.id.startswith("images/") and r.id.endswith(".jpg") for r in records)
    (raw / "images_variant_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"images_variant_val\.txt.*not found.*data/ folder"):
        prepare(_coop({"format": "fgvc_aircraft"}), dataset="ds", raw=raw, out=out)


def test_fgvc_aircraft_unknown_variant_names_the_line(tmp_path):
    raw = build_fgvc_aircraft(tmp_path / "fgvc_aircraft")
    (raw / "images_variant_test.txt").write_text("1000017 Boeing 999\n")
    with pytest.raises(ValueError, match=r"images_variant_test\.txt:1: variant 'Boeing 999' is not in variants\.txt"):
        list_layout("coop", raw, {"format": "fgvc_aircraft"})


def test_imagenet_folders_and_classnames(tmp_path):
    raw, out = build_imagenet(tmp_path / "imagenet"), tmp_path / "prepared"
    report = prepare(_coop({"format": "imagenet"}, {"train": 9, "test": 6, "classes": 3}), dataset="ds", raw=raw,
                     out=out)
    records, classes = load_manifest(out)
    assert classes == ["tench", "goldfish", "great white shark"]  # sorted wnids, CLIP's names
    assert _splits(records) == {"train": 9, "test": 6}  # CoOp tests on val; no val split
    assert report["counts"] == {"train": 9, "test": 6, "classes": 3} and report["warnings"] == []
    r = next(r for r in records if r.split == "test" and r.label == 2)
    assert r.id.startswith("images/val/n01484850/ILSVRC2012_val_")


def test_imagenet_layouts_it_cannot_read_say_what_is_missing(tmp_path):
    raw = build_imagenet(tmp_path / "imagenet")
    (raw / "classnames.txt").rename(raw / "names.txt")
    with pytest.raises(FileNotFoundError, match=r"classnames\.txt.*not found.*DATASETS\.md#imagenet"):
        list_layout("coop", raw, {"format": "imagenet"})
    assert list_layout("coop", raw, {"format": "imagenet", "classnames": "names.txt"}).classes[0] == "tench"
    for f in sorted((raw / "images/val/n01440764").iterdir()):  # the official archive's val: flat
        f.rename(raw / "images/val" / f.name)
    with pytest.raises(ValueError, match=r"images/val: 2 images lie directly in it, not in one <wnid>/ folder"):
        list_layout("coop", raw, {"format": "imagenet", "classnames": "names.txt"})


def test_options_are_checked(tmp_path):
    raw = build_oxford_pets(tmp_path / "oxford_pets")
    with pytest.raises(ValueError, match=r"options\.splits: unknown for layout 'coop'"):
        list_layout("coop", raw, {"splits": {}})
    with pytest.raises(ValueError, match=r"options\.format: 'cifar' is not one of"):
        list_layout("coop", raw, {"format": "cifar"})
    with pytest.raises(ValueError, match=r"options\.split_file: format imagenet does not read it"):
        list_layout("coop", raw, {"format": "imagenet", "split_file": "x.json"})


# ------------------------------------------------------------------ what was found: partial, mismatch, nothing


def test_partial_download_names_each_missing_file_and_the_manifest_has_the_rest(tmp_path):
    raw, out = build_sun397(tmp_path / "sun397"), tmp_path / "prepared"
    split = json.loads((raw / "split_zhou_SUN397.json").read_text())
    gone = [f"SUN397/{split['train'][0][0]}", f"SUN397/{split['test'][3][0]}", f"SUN397/{split['val'][5][0]}"]
    for p in gone:
        (raw / p).unlink()
    options = {"split_file": "split_zhou_SUN397.json", "image_dir": "SUN397"}
    with pytest.raises(DatasetError) as e:  # the default policy stops, first saying what kind of problem it is
        prepare(_coop(options), dataset="ds", raw=raw, out=out)
    msg = str(e.value)
    assert msg.startswith("ds: partial download: 3 of 18 listed files absent (first: ")
    assert all(f"{raw / p}: file not found" in msg for p in gone)

    report = prepare(_coop(options, on_bad_image="skip"), dataset="ds", raw=raw, out=out)
    records, _ = load_manifest(out)
    assert _splits(records) == {"train": 5, "val": 5, "test": 5}
    assert report["counts"] == {"train": 5, "test": 5, "classes": 3, "val": 5}
    assert sorted(s["id"] for s in report["skipped"]) == sorted(gone)
    assert all(s["reason"] == "file not found" for s in report["skipped"])
    found = report["found"]
    assert found["verdict"] == "partial download" and found["missing"] == 3 and found["present"] == 15
    assert found["first_missing"] == [p for p in [f"SUN397/{r[0]}" for k in ("train", "val", "test")
                                                  for r in split[k]] if p in gone]
    assert found["listed"] == {"train": 6, "val": 6, "test": 6} and found["unlisted"] == 0
    on_disk = json.loads((out / "prepare_report.json").read_text())
    assert on_disk["found"] == found and on_disk["skipped"] == report["skipped"]


def test_a_split_mismatch_is_told_from_a_partial_download(tmp_path):
    raw = build_oxford_pets(tmp_path / "oxford_pets")
    (raw / "images/Bengal_2.jpg").rename(raw / "images/Bengal_2.png")  # another release: re-encoded files
    (raw / "images/Bengal_5.jpg").rename(raw / "images/bengal_5.jpg")  # ... and renamed ones
    found = list_layout("coop", raw, {"split_file": "split_zhou_OxfordPets.json", "image_dir": "images"}).notes["found"]
    assert found["verdict"] == "split mismatch" and found["missing"] == 2 and found["unlisted"] == 2
    assert found["first_missing"] == ["images/Bengal_2.jpg", "images/Bengal_5.jpg"]
    assert found["first_unlisted"] == ["images/Bengal_2.png", "images/bengal_5.jpg"]
    assert "e.g. images/Bengal_2.jpg is listed and images/Bengal_2.png is on disk" in found["diagnosis"]


def test_an_empty_download_or_the_wrong_folder_stops_before_anything_is_read(tmp_path):
    raw = build_oxford_pets(tmp_path / "oxford_pets")
    (raw / "jpg").mkdir()
    with pytest.raises(FileNotFoundError, match=r"none of the 24 files the split lists is there.*set sources\.<dataset>"
                                                r"\.options\.image_dir: images"):
        list_layout("coop", raw, {"split_file": "split_zhou_OxfordPets.json", "image_dir": "jpg"})
    with pytest.raises(FileNotFoundError, match=r"oxford_pets/imgs: image folder not found"):
        list_layout("coop", raw, {"split_file": "split_zhou_OxfordPets.json", "image_dir": "imgs"})
    (raw / "split_zhou_OxfordPets.json").write_text("<html>Google Drive: quota exceeded</html>")
    with pytest.raises(ValueError, match=r"not valid JSON.*HTML page"):
        list_layout("coop", raw, {"split_file": "split_zhou_OxfordPets.json"})


def test_byte_identical_images_across_the_published_split_are_kept_and_listed(tmp_path, caplog):
    raw, out = build_oxford_pets(tmp_path / "oxford_pets"), tmp_path / "prepared"
    (raw / "images/Bengal_6.jpg").write_bytes((raw / "images/Bengal_1.jpg").read_bytes())  # a train image in test
    with caplog.at_level(logging.WARNING):
        report = prepare(_coop({"split_file": "split_zhou_OxfordPets.json"}), dataset="ds", raw=raw, out=out)
    assert report["counts"]["test"] == 8 and len(report["duplicates"]) == 1
    assert report["duplicates"][0].startswith("byte-identical images in train and test: ")
    assert "kept: the published split has them" in caplog.text


# ------------------------------------------------------------------------- the val split downstream, the config


def test_few_shot_validation_comes_from_the_datasets_own_val_split():
    from lmmreg.methods.base import MethodInputs
    from lmmreg.shots import few_shot_inputs

    y = torch.arange(3).repeat_interleave(10)  # [30] train labels
    val_y = torch.arange(3).repeat_interleave(6)  # [18] the dataset's val split
    inp = MethodInputs(tail=torch.nn.Identity(), train_feat=torch.randn(30, 4), test_feat=torch.randn(3, 4),
                       train_y=y, test_y=torch.arange(3), centroids=torch.zeros(3, 4), class_text=torch.zeros(3, 4),
                       train_text_mean=torch.zeros(30, 4), test_text_mean=torch.zeros(3, 4),
                       val_feat=100 + torch.randn(18, 4), val_y=val_y)
    cfg = TrainConfig(shots=8, centroids_from="train")
    sub, ids = few_shot_inputs(inp, cfg, seed=1, train_ids=[f"t{i}" for i in range(30)], desc=None,
                               classes=["a", "b", "c"])
    assert len(ids) == 24 and torch.bincount(sub.val_y).tolist() == [4, 4, 4]  # min(K, 4) per class
    assert bool((sub.val_feat > 50).all())  # drawn from the val rows, never from the training images
    again, _ = few_shot_inputs(inp, cfg, seed=1, train_ids=[f"t{i}" for i in range(30)], desc=None,
                               classes=["a", "b", "c"])
    assert torch.equal(again.val_feat, sub.val_feat)


def test_coop11_config_lists_the_eleven_and_the_doctor_says_which_are_in_place(tmp_path):
    from lmmreg.data.checks import check_datasets
    from lmmreg.preflight import MISSING, OK, WARN

    params = load_params(REPO / "configs/coop11.yaml")
    assert len(params.datasets) == 11 and {params.source(d).layout for d in params.datasets} == {"coop"}
    assert {"finetune", "lmm_reg", "zero_shot", "tip_adapter", "gda", "coop"} <= set(params.train.methods)
    grid = yaml.safe_load((REPO / "configs/coop11_shots.yaml").read_text())
    assert grid["blocks"][0]["grid"] == {"train.shots": [1, 2, 4, 8, 16]} and params.train.shots == 16
    build_oxford_pets(tmp_path / "data/raw/oxford_pets")
    build_sun397(tmp_path / "data/raw/sun397")
    (tmp_path / "data/raw/sun397/SUN397/a/abbey").rename(tmp_path / "data/raw/sun397/SUN397/a/abbey_")
    t0 = time.perf_counter()
    checks = {c.name: c for c in check_datasets(params, tmp_path)}
    assert time.perf_counter() - t0 < 30
    assert [c.status for c in checks.values()].count(MISSING) == 10
    pets = checks["dataset oxford_pets"]
    assert pets.status == WARN and "12 train / 8 test, 4 classes" in pets.detail  # in place, but not CoOp's counts
    sun = checks["dataset sun397"]
    assert sun.status == MISSING and "6 listed file(s) absent, e.g. SUN397/a/abbey/sun_" in sun.detail
    assert checks["dataset imagenet"].detail.endswith("raw dataset folder not found (place or symlink the data "
                                                      "there, then `dvc add` it; see docs/datasets.md)")
    assert "KaiyangZhou/CoOp/blob/main/DATASETS.md" in checks["dataset food101"].fix
    assert OK not in {c.status for c in checks.values()}


def test_literature_rows_carry_their_protocol_and_only_the_elevens():
    from lmmreg.report.literature import ELEVEN, GDA, TIP_ADAPTER, literature_rows, rows_for

    rows = literature_rows()
    assert {r.dataset for r in rows} == set(ELEVEN)
    for ds in ELEVEN:  # GDA, Tip-Adapter(-F) and CLIP-Adapter at every K, and one zero-shot row
        assert Counter(r.method for r in rows_for(ds)) == {"GDA": 5, "Tip-Adapter": 5, "Tip-Adapter-F": 5,
                                                            "CLIP-Adapter": 5, "zero_shot (CLIP)": 1}
    gda = rows_for("fgvc_aircraft", shots=16)
    gda = next(r for r in gda if r.method == "GDA")
    assert gda.per_seed == (40.89, 40.80, 40.14) and gda.accuracy == 40.61 and gda.protocol is GDA
    assert "test" in GDA.notes and "RN50" in GDA.backbone  # ImageNet's alpha chosen on test: said, not hidden
    tip_f = next(r for r in rows_for("imagenet", shots=16) if r.method == "Tip-Adapter-F")
    assert tip_f.accuracy == 65.51 and tip_f.protocol is TIP_ADAPTER and "test set" in TIP_ADAPTER.notes
    with pytest.raises(ValueError, match="CoOp's eleven only"):
        rows_for("demo")
