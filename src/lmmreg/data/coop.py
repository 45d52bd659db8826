"""Layout `coop`: any dataset in CoOp's format (KaiyangZhou/CoOp, DATASETS.md), the field's few-shot benchmark.

    sources:
      oxford_pets:
        layout: coop
        options: {split_file: split_zhou_OxfordPets.json, image_dir: images}
        expected: {train: 2944, val: 736, test: 3669, classes: 37}

A split file is `{"train"|"val"|"test": [[path, label, class_name], ...]}`, paths relative to `image_dir` (itself
relative to the raw root; left out, it is the folder under the root that holds the split's first files). Its val
split stays `val` in the manifest, so the baselines' searches can use it; class names come from the file, `_` read
as a space as CoOp's prompts read it. Two of the eleven ship no split file (`options.format`):

- `fgvc_aircraft`: the archive's `data/` folder, `variants.txt` (label order) and `images_variant_<split>.txt`
  (`<image id> <variant name>` per line), images in `images/<id>.jpg`.
- `imagenet`: `images/train/<wnid>/` and `images/val/<wnid>/` with `classnames.txt` (`<wnid> <name>`, CLIP's
  names); CoOp tests on ImageNet's val and has no val split, so the searches hold theirs out of train.

The layout also takes stock of what is on disk (`found`, in `prepare_report.json`): the listed files per split,
how many are absent and which come first, the images on disk the split does not list, and a verdict that tells a
partial download (files absent, nothing else there) from a split mismatch (files absent while others stand in
their place) from a wrong `image_dir` or an empty download (none of the listed files found: an error here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

from lmmreg.data.images import IMAGE_EXTENSIONS
from lmmreg.data.layouts import Layout, RawItem, _check_options, parse_coop_split
from lmmreg.errors import InputError

log = logging.getLogger(__name__)

FORMATS = ("split_json", "fgvc_aircraft", "imagenet")
COOP_SPLITS = ("train", "val", "test")
FIRST = 10  # how many missing / unlisted files `found` names
DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
# CoOp's split files and the section of its DATASETS.md that links each (Google Drive)
SPLIT_FILES = {
    "split_zhou_Caltech101.json": "caltech101", "split_zhou_OxfordPets.json": "oxfordpets",
    "split_zhou_StanfordCars.json": "stanfordcars", "split_zhou_OxfordFlowers.json": "flowers102",
    "split_zhou_Food101.json": "food101", "split_zhou_SUN397.json": "sun397",
    "split_zhou_DescribableTextures.json": "dtd", "split_zhou_EuroSAT.json": "eurosat",
    "split_zhou_UCF101.json": "ucf101",
}
# Why a missing split file cannot be rebuilt from the dataset's own lists (CoOp drew the split once, at random)
NOT_REBUILDABLE = {
    "split_zhou_SUN397.json": "SUN397's Partitions (ClassName.txt, Training_01.txt, Testing_01.txt) give train+val "
                              "and test only: CoOp's val is a random 20 % of Training_01.txt, drawn once when the "
                              "file was made",
}


def coop_class_name(name: str) -> str:
    """CoOp's name as its prompts read it: `_` -> space, runs of spaces collapsed, case kept (`Annual Crop Land`)."""
    return re.sub(r"[\s_]+", " ", name).strip()


def list_files(folder: Path, root: Path) -> set[str]:
    """Every visible file under `folder`, as POSIX paths relative to `root` (one `os.walk`: ImageNet's 1.3M files
    are listed in seconds, where a `stat` per listed file would not be)."""
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        out.update(prefix + f for f in filenames if not f.startswith("."))
    return out


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _join(image_dir: str, path: str) -> str:
    return f"{image_dir}/{path}" if image_dir else path


# ------------------------------------------------------------------------------------------------ split sources


def load_split_file(root: Path, split_file: str | None) -> tuple[dict, Path]:
    """The CoOp split file named by `options.split_file`, else the one `split_zhou_*.json` in the raw root."""
    if split_file:
        path = root / split_file
    else:
        found = sorted(root.glob("split_zhou_*.json"))
        if len(found) != 1:
            what = "no split_zhou_*.json" if not found else f"{len(found)} split files ({[f.name for f in found]})"
            raise FileNotFoundError(f"{root}: {what}; name it with sources.<dataset>.options.split_file (CoOp's are "
                                    f"split_zhou_<Name>.json, {DATASETS_MD}; FGVCAircraft and ImageNet have none: "
                                    "set options.format)")
        path = found[0]
    if not path.is_file():
        section = SPLIT_FILES.get(path.name)
        where = f"CoOp's file: {DATASETS_MD}#{section}" if section else f"CoOp's are listed in {DATASETS_MD}"
        why = f"; it cannot be rebuilt: {NOT_REBUILDABLE[path.name]}" if path.name in NOT_REBUILDABLE else ""
        raise FileNotFoundError(f"{path}: split file not found (sources.<dataset>.options.split_file; {where}){why}")
    try:
        return json.loads(path.read_text()), path
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e}); a download that failed may have saved an HTML page") from e


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found ({what})")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_from_fgvc_aircraft(root: Path) -> dict:
    """FGVCAircraft's text lists -> a CoOp split: `variants.txt` fixes the labels, `images_variant_<split>.txt` lists
    `<image id> <variant name with spaces>`; paths `<id>.jpg` relative to `images/` (CoOp's read_data)."""
    hint = ("FGVCAircraft's own lists: unpack fgvc-aircraft-2013b.tar.gz and point data/raw/<dataset> at its data/ "
            f"folder, {DATASETS_MD}#fgvcaircraft")
    variants = _read_lines(root / "variants.txt", hint)
    label = {v: i for i, v in enumerate(variants)}
    split: dict[str, list] = {}
    errors = []
    for key in COOP_SPLITS:
        name = f"images_variant_{key}.txt"
        rows = []
        for lineno, line in enumerate(_read_lines(root / name, hint), start=1):
            image_id, _, variant = line.partition(" ")
            if variant not in label:
                errors.append(f"{root / name}:{lineno}: variant {variant!r} is not in variants.txt")
                continue
            rows.append([f"{image_id}.jpg", label[variant], variant])
        split[key] = rows
    if errors:
        raise InputError(f"{len(errors)} problem(s) in FGVCAircraft's lists:\n  " + "\n  ".join(errors[:50]))
    return split


def split_from_imagenet(root: Path, image_dir: str, classnames_file: str, files: set[str]) -> dict:
    """ImageNet's folders -> a CoOp split: train = `train/<wnid>/*`, test = `val/<wnid>/*` (no val split, as in
    CoOp); labels in sorted wnid order, names from `classnames.txt` (`<wnid> <name>`, CLIP's)."""
    lines = _read_lines(root / classnames_file, f"ImageNet's class names as CoOp uses them, CLIP's: "
                                                f"{DATASETS_MD}#imagenet")
    names = dict(line.partition(" ")[::2] for line in lines)
    wnids = sorted(names)
    label = {w: i for i, w in enumerate(wnids)}
    split: dict[str, list] = {"train": [], "test": []}
    prefix = f"{image_dir}/" if image_dir else ""
    flat: Counter[str] = Counter()
    unknown: set[str] = set()
    for f in sorted(files):
        if not f.startswith(prefix) or not _is_image(f):
            continue
        parts = f[len(prefix):].split("/")
        if parts[0] not in ("train", "val"):
            continue
        if len(parts) == 2:
            flat[parts[0]] += 1
            continue
        if parts[1] not in label:
            unknown.add(f"{parts[0]}/{parts[1]}")
            continue
        split["train" if parts[0] == "train" else "test"].append(["/".join(parts), label[parts[1]], names[parts[1]]])
    if flat:
        where, n = flat.most_common(1)[0]
        raise InputError(f"{root / image_dir / where}: {n} images lie directly in it, not in one <wnid>/ folder per "
                         "class; CoOp reads ImageNet's validation images sorted into class folders (move each into "
                         "its wnid's folder, from ILSVRC2012's validation ground truth)")
    if unknown:
        raise InputError(f"{root / image_dir}: folders {sorted(unknown)[:5]} are not in {classnames_file} "
                         f"({len(unknown)} in all)")
    for key, folder in (("train", "train"), ("test", "val")):
        absent = sorted(set(wnids) - {wnids[row[1]] for row in split[key]})
        if absent:  # a class with no folder: CoOp's labels (sorted folders) would shift, so refuse
            raise FileNotFoundError(f"{root / image_dir / folder}: {len(absent)} of the {len(wnids)} classes of "
                                    f"{classnames_file} have no images here (first: {absent[:3]}; a partial download? "
                                    f"{DATASETS_MD}#imagenet)")
    return split


# ----------------------------------------------------------------------------------------------- image folder


def _candidate_dirs(root: Path, depth: int = 2, most: int = 100) -> list[str]:
    """The raw root and its folders down to `depth`, shallowest first, `most` per level (where a split's paths may
    start: a folder of class folders is passed over quickly, so guessing stays instant)."""
    out, level = [""], [root]
    for _ in range(depth):
        nxt: list[Path] = []
        for d in level:
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        level = nxt[:most]
        out += [p.relative_to(root).as_posix() for p in level]
    return out


def guess_image_dir(root: Path, sample: list[str]) -> tuple[str, int]:
    """The folder under `root` that holds the most of `sample` (split paths), shallowest first; (dir, hits)."""
    best, hits = "", 0
    for d in _candidate_dirs(root):
        n = sum((root / d / p).is_file() for p in sample)
        if n > hits:
            best, hits = d, n
    return best, hits


# ------------------------------------------------------------------------------------------------- stock-taking


def take_stock(items: list[RawItem], files: set[str], *, image_dir: str) -> dict[str, Any]:
    """What the split lists against what is on disk: counts, the first absent and unlisted files, a verdict."""
    listed = {it.path for it in items}
    missing = [it.path for it in items if it.path not in files]
    prefix = f"{image_dir}/" if image_dir else ""
    unlisted = sorted(f for f in files if f.startswith(prefix) and _is_image(f) and f not in listed)
    n = len(items)
    found: dict[str, Any] = {
        "image_dir": image_dir or ".", "listed": dict(Counter(it.split for it in items)), "present": n - len(missing),
        "missing": len(missing), "first_missing": missing[:FIRST], "unlisted": len(unlisted),
        "first_unlisted": unlisted[:FIRST]}
    if not missing:
        found["verdict"] = "complete"
        found["diagnosis"] = f"complete: all {n} listed files present" + (
            f"; {len(unlisted)} image(s) on disk are not in the split and are ignored (first: {unlisted[0]})"
            if unlisted else "")
        return found
    by_dir: defaultdict[str, list[bool]] = defaultdict(list)
    for it in items:
        by_dir[str(PurePosixPath(it.path).parent)].append(it.path in files)
    gone = sorted(d for d, present in by_dir.items() if not any(present))
    folders = (f"; every listed file of {len(gone)} folder(s) is absent (first: {gone[0]}/)"
               if gone and len(gone) < len(by_dir) else "")
    head = f"{len(missing)} of {n} listed files absent (first: {', '.join(missing[:3])}){folders}"
    if not unlisted:
        found["verdict"] = "partial download"
        found["diagnosis"] = (f"partial download: {head}, and no image on disk outside the split: download or "
                              "unpack the archive again")
        return found
    stems = {PurePosixPath(f).with_suffix("").as_posix(): f for f in unlisted}
    pair = next(((m, stems[PurePosixPath(m).with_suffix("").as_posix()]) for m in missing
                 if PurePosixPath(m).with_suffix("").as_posix() in stems), None)
    like = f"; e.g. {pair[0]} is listed and {pair[1]} is on disk" if pair else ""
    found["verdict"] = "split mismatch"
    found["diagnosis"] = (f"split mismatch: {head}, while {len(unlisted)} image(s) on disk are not in the split "
                          f"(first: {', '.join(unlisted[:3])}){like}: these images are not the copy the split file "
                          "was written for (another release, renamed or re-encoded files)")
    return found


# ------------------------------------------------------------------------------------------------------ layout


def list_coop(root: Path, options: dict[str, Any]) -> Layout:
    """CoOp's format: options `split_file`, `image_dir`, `format` (split_json | fgvc_aircraft | imagenet) and, for
    imagenet, `classnames` (default `classnames.txt`). See the module docstring."""
    _check_options("coop", options, {"format", "split_file", "image_dir", "classnames"})
    fmt = str(options.get("format", "split_json"))
    if fmt not in FORMATS:
        raise InputError(f"sources.<dataset>.options.format: {fmt!r} is not one of {list(FORMATS)}")
    for key, only in (("split_file", "split_json"), ("classnames", "imagenet")):
        if key in options and fmt != only:
            raise InputError(f"sources.<dataset>.options.{key}: format {fmt} does not read it (only {only})")
    image_dir = str(options.get("image_dir", "" if fmt == "split_json" else "images")).strip("/")
    image_dir = "" if image_dir == "." else image_dir
    notes: dict[str, Any] = {"format": fmt}
    if fmt == "split_json":
        split, path = load_split_file(root, options.get("split_file"))
        notes.update(split_file=str(path), split_file_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        rows, classes = parse_coop_split(split, str(path), keep_val=True, rename=coop_class_name)
        if "image_dir" not in options:
            sample = [p for key in COOP_SPLITS for p in [r[0] for r in rows if r[1] == key][:5]]
            image_dir = guess_image_dir(root, sample)[0]
    elif fmt == "fgvc_aircraft":
        rows, classes = parse_coop_split(split_from_fgvc_aircraft(root), f"{root}/images_variant_*.txt",
                                         keep_val=True, rename=coop_class_name)
    folder = root / image_dir
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found (sources.<dataset>.options.image_dir)")
    files = list_files(folder, root)  # [N files on disk], the one walk of the image folder
    if fmt == "imagenet":
        classnames = str(options.get("classnames", "classnames.txt"))
        split = split_from_imagenet(root, image_dir, classnames, files)
        rows, classes = parse_coop_split(split, f"{folder}/{{train,val}}", keep_val=True, rename=coop_class_name)
        notes["classnames"] = str(root / classnames)
    items = [RawItem(_join(image_dir, path), classes[label], key) for path, key, label in rows]
    found = take_stock(items, files, image_dir=image_dir)
    if found["present"] == 0:  # an empty download or the wrong folder: nothing to prepare, say where they are
        better, hits = guess_image_dir(root, [path for path, _, _ in rows[:20]])
        hint = (f"; they are under {root / better}: set sources.<dataset>.options.image_dir: {better or '.'}"
                if hits else "")
        raise FileNotFoundError(f"{folder}: none of the {len(items)} files the split lists is there "
                                f"({found['unlisted']} other image(s) on disk, first: {found['first_unlisted'][:3]})"
                                f"{hint}")
    log.log(logging.INFO if found["verdict"] == "complete" else logging.WARNING, "coop (%s): %s", root,
            found["diagnosis"])
    return Layout(items, classes, {**notes, "found": found, "fixed_split": True})
