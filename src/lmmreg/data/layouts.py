"""Raw dataset layouts -> a list of candidate files (path, class, split) for `prepare`.

Each layout function takes the raw root and the layout options from `params.yaml`
(`sources.<name>.options`) and returns a :class:`Layout`: items in a stable order, classes in label
order, and notes (which split file, which folder -> class table) that `prepare` writes into its report.
Checking the files themselves is `prepare`'s job, not the layout's. Layouts:

- `ucf101`: CoOp's `UCF-101-midframes/<Class_Folder>/<video>.jpg` + a CoOp-format split file (official split 1).
- `bar`: alinlab/BAR, flat `train/` and `test/`, class = file stem up to the last `_` (`pole vaulting_0.jpg`).
- `era`: `<root>/<split>/<folder>/<video or frame>`, folder names mapped to the paper's 25 classes.
- `imagefolder`: `<root>/<split>/<class>/<file>`; `csv`: rows `path,label,split` relative to the root.
- `coop`: any dataset in CoOp's format (a split file, or FGVCAircraft's and ImageNet's own), :mod:`lmmreg.data.coop`.
- `demo`: the generated demo (an imagefolder with the generator's class order).

Files with a video extension (see :mod:`lmmreg.data.video`) become one frame each in `prepare`.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lmmreg.data.images import IMAGE_EXTENSIONS
from lmmreg.data.splits import load_table
from lmmreg.errors import InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class RawItem:
    path: str  # relative to the folder the images are read from, POSIX separators
    class_name: str
    split: str  # train | test (| val: a layout whose source has its own, `coop`)
    source: str = ""  # the raw file it came from when that is not `path` (a video whose frame `path` is)

    @property
    def id(self) -> str:
        """Stable id: the raw file's path relative to the raw root."""
        return self.source or self.path


@dataclass(frozen=True)
class Layout:
    items: list[RawItem]
    classes: list[str]  # label order
    notes: dict[str, Any] = field(default_factory=dict)  # goes into prepare_report.json


def _check_options(layout: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"sources.<dataset>.options.{unknown[0]}: unknown for layout {layout!r} "
                         f"(known: {sorted(allowed) or 'none'})")


def _visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, recursively, sorted, without hidden files (`.DS_Store`, `._x.jpg`)."""
    return sorted(f for f in folder.rglob("*") if f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def _find_split_dirs(root: Path, options: dict[str, Any], layout: str) -> dict[str, Path]:
    """`options.splits` ({train: dir, test: dir}) or folders named train/test in any letter case."""
    if "splits" in options:
        names = options["splits"]
        if not isinstance(names, dict) or set(names) != set(SPLITS):
            raise InputError(f"sources.<dataset>.options.splits: expected {{train: <folder>, test: <folder>}}, "
                             f"got {names!r}")
        dirs = {split: root / str(name) for split, name in names.items()}
    else:
        present = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
        dirs = {split: present.get(split, root / split) for split in SPLITS}
    for split, d in dirs.items():
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: missing split folder for {split!r} ({layout} layout; "
                                    "set sources.<dataset>.options.splits to name it)")
    return dirs


def _class_order(found: set[str], options: dict[str, Any]) -> list[str]:
    """`options.classes` if given, else sorted (numerically when every name is an integer)."""
    if "classes" in options:
        classes = [str(c) for c in options["classes"]]
        missing = sorted(found - set(classes))
        if missing:
            raise InputError(f"sources.<dataset>.options.classes: lacks {missing} found in the data")
        return classes
    if found and all(re.fullmatch(r"-?\d+", c) for c in found):
        return sorted(found, key=int)
    return sorted(found)


def list_imagefolder(root: Path, options: dict[str, Any]) -> Layout:
    """`<root>/<split>/<class>/<file>`; option `splits` renames the split folders, `classes` fixes the order."""
    _check_options("imagefolder", options, {"splits", "classes", "frame"})
    items: list[RawItem] = []
    found: set[str] = set()
    for split, split_root in _find_split_dirs(root, options, "imagefolder").items():
        for class_dir in sorted(p for p in split_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.add(class_dir.name)
            for f in _visible_files(class_dir):
                items.append(RawItem(f.relative_to(root).as_posix(), class_dir.name, split))
    return Layout(items, _class_order(found, options))


def list_demo(root: Path, options: dict[str, Any]) -> Layout:
    """The generated demo: an imagefolder whose class order is the generator's label order."""
    _check_options("demo", options, set())
    layout = list_imagefolder(root, {})
    classes = [c["name"] for c in json.loads((root / "classes.json").read_text())]
    return Layout(layout.items, classes)


def normalize_class_name(name: str) -> str:
    """`Apply_Eye_Makeup` / `apply-eye  makeup` -> `apply eye makeup` (CoOp turns `_` into spaces too)."""
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def parse_coop_split(split: Any, source: str, *, keep_val: bool = False, rename: Callable[[str], str] =
                     normalize_class_name) -> tuple[list[tuple[str, str, int]], list[str]]:
    """A CoOp split file `{"train"|"val"|"test": [[path, label, class_name], ...]}` -> (path, split, label), classes.

    `val` joins `train` (the paper's 9,537 = CoOp's 7,639 train + 1,898 val) unless `keep_val`. Class names go
    through `rename`, by default :func:`normalize_class_name`, so CoOp's `Apply_Eye_Makeup` and the shipped
    `apply eye makeup` agree.
    """
    if not isinstance(split, dict) or not {"train", "test"} <= set(split) or set(split) - {"train", "val", "test"}:
        got = sorted(split)[:5] if isinstance(split, dict) else type(split).__name__
        raise InputError(f"{source}: expected keys train, test (and val), got {got}")
    rows: list[tuple[str, str, int]] = []
    names: dict[int, str] = {}
    seen: dict[str, str] = {}
    errors: list[str] = []
    for key in ("train", "val", "test"):
        for i, entry in enumerate(split.get(key, [])):
            where = f"{source}: {key}[{i}]"
            if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                    or isinstance(entry[1], bool) or not isinstance(entry[1], int) or not isinstance(entry[2], str)):
                errors.append(f"{where}: expected [path, label, class_name], got {entry!r}")
                continue
            path, label, name = entry[0], entry[1], rename(entry[2])
            if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                errors.append(f"{where}: path {path!r} must be relative to the image folder")
            if names.setdefault(label, name) != name:
                errors.append(f"{where}: label {label} is {names[label]!r} elsewhere, {name!r} here")
            if path in seen:
                errors.append(f"{where}: {path!r} listed twice ({seen[path]} and {key})")
            seen[path] = key
            rows.append((path, key if keep_val or key != "val" else "train", label))
    if sorted(names) != list(range(len(names))):
        errors.append(f"{source}: labels must be 0..{len(names) - 1} without gaps, got {sorted(names)[:5]}...")
    if errors:
        raise InputError(f"{len(errors)} problem(s) in the split file:\n  " + "\n  ".join(errors[:50]))
    return rows, [names[i] for i in range(len(names))]


def list_ucf101(root: Path, options: dict[str, Any]) -> Layout:
    """CoOp's `UCF-101-midframes` with the official split 1 (train + val = train, 101 classes in UCF order).

    Options: `split_file` (a CoOp-format JSON relative to the raw root, e.g. CoOp's `split_zhou_UCF101.json`;
    default: the split shipped in `lmmreg/data/splits/ucf101_split.json`), `image_dir` (the folder the split's
    paths are relative to; default `UCF-101-midframes` when it exists, else the raw root itself).
    """
    _check_options("ucf101", options, {"split_file", "image_dir"})
    if options.get("split_file"):
        split_path = root / str(options["split_file"])
        if not split_path.is_file():
            raise FileNotFoundError(f"{split_path}: split file not found (sources.<dataset>.options.split_file)")
        try:
            split = json.loads(split_path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{split_path}: not valid JSON ({e})") from e
        source = str(split_path)
    else:
        split, source = load_table("ucf101_split.json"), "lmmreg/data/splits/ucf101_split.json"
    rows, classes = parse_coop_split(split, source)
    if "image_dir" in options:
        image_dir = str(options["image_dir"]).strip("/")
    else:
        image_dir = "UCF-101-midframes" if (root / "UCF-101-midframes").is_dir() else ""
    prefix = f"{image_dir}/" if image_dir else ""
    items = [RawItem(prefix + path, classes[label], split) for path, split, label in rows]
    listed = {it.path for it in items}
    base = root / image_dir
    unlisted = [f.relative_to(root).as_posix() for f in _visible_files(base)
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.relative_to(root).as_posix() not in listed]
    if unlisted:
        log.warning("ucf101: %d image(s) under %s are not in the split and are ignored, e.g. %s",
                    len(unlisted), base, unlisted[:3])
    return Layout(items, classes, {"split_file": source, "image_dir": image_dir or ".",
                                   "unlisted_images": len(unlisted)})


def list_bar(root: Path, options: dict[str, Any]) -> Layout:
    """alinlab/BAR: flat `train/` and `test/`, `<class>_<index>.jpg`, class = stem up to the last `_`.

    Option `classes` replaces the class order shipped in `lmmreg/data/splits/bar_classes.json`.
    """
    _check_options("bar", options, {"classes", "splits"})
    order = load_table("bar_classes.json")["classes"]
    items: list[RawItem] = []
    errors: list[str] = []
    found: set[str] = set()
    for split, split_root in _find_split_dirs(root, options, "bar").items():
        for f in sorted(split_root.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                errors.append(f"{f}: a folder inside {split_root} (BAR's split folders are flat)")
                continue
            stem = f.name.rsplit(".", 1)[0]
            if "_" not in stem:
                errors.append(f"{f}: no '_' in the name, so no class (expected <class>_<index>.jpg)")
                continue
            cls = stem.rsplit("_", 1)[0]
            found.add(cls)
            items.append(RawItem(f.relative_to(root).as_posix(), cls, split))
    if errors:
        raise InputError(f"bar: {len(errors)} file(s) do not fit the layout:\n  " + "\n  ".join(errors))
    classes = [str(c) for c in options.get("classes", order)]
    unknown = sorted(found - set(classes))
    if unknown:
        raise InputError(f"bar: classes {unknown} under {root} are not BAR's {classes} "
                         "(set sources.<dataset>.options.classes to list them in label order)")
    return Layout(items, classes)


def build_class_map(folders: list[str], classes: list[str], aliases: dict[str, str],
                    overrides: dict[str, str]) -> dict[str, str]:
    """Map each folder name to a class: the user's `class_map` first, then names and aliases, normalised."""
    known = {normalize_class_name(c): c for c in classes}
    known.update({normalize_class_name(a): c for a, c in aliases.items()})
    for folder, cls in overrides.items():
        if cls not in classes:
            raise InputError(f"sources.<dataset>.options.class_map.{folder}: {cls!r} is not one of {classes}")
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for folder in folders:
        cls = overrides.get(folder) or known.get(normalize_class_name(folder))
        if cls is None:
            unknown.append(folder)
        else:
            mapping[folder] = cls
    if unknown:
        raise InputError(f"folders {unknown} match no class; map them with sources.<dataset>.options.class_map "
                         f"{{folder: class}} (classes: {classes}; aliases: {sorted(aliases)})")
    return mapping


def list_era(root: Path, options: dict[str, Any]) -> Layout:
    """ERA: `<root>/<split>/<folder>/<video or frame>`; folder names -> the paper's 25 classes.

    The table (names + aliases) is `lmmreg/data/splits/era_classes.json`; option `class_map` {folder: class}
    overrides it, `classes` replaces the class list (label order), `frame` picks the frame of each video.
    """
    _check_options("era", options, {"splits", "class_map", "classes", "frame"})
    table = load_table("era_classes.json")
    classes = [str(c) for c in options.get("classes", table["classes"])]
    overrides = {str(k): str(v) for k, v in (options.get("class_map") or {}).items()}
    split_dirs = _find_split_dirs(root, options, "era")
    folders = sorted({p.name for d in split_dirs.values() for p in d.iterdir()
                      if p.is_dir() and not p.name.startswith(".")})
    try:
        mapping = build_class_map(folders, classes, table["aliases"], overrides)
    except ValueError as e:
        raise InputError(f"era ({root}): {e}") from None
    items: list[RawItem] = []
    for split, split_root in split_dirs.items():
        for class_dir in sorted(p for p in split_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in _visible_files(class_dir):
                items.append(RawItem(f.relative_to(root).as_posix(), mapping[class_dir.name], split))
    log.info("era: folder -> class %s", mapping)
    return Layout(items, classes, {"class_map": mapping})


def list_csv(root: Path, options: dict[str, Any]) -> Layout:
    """Rows `path,label,split` in `<root>/<file>` (option `file`, default `labels.csv`); paths relative to the root.

    `label` is the class name (a number is a name too); class order: option `classes`, else sorted (numerically
    when every name is an integer). `split` is train or test. Other columns are ignored.
    """
    _check_options("csv", options, {"file", "classes", "frame"})
    path = root / str(options.get("file", "labels.csv"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: csv file not found (sources.<dataset>.options.file)")
    items: list[RawItem] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "label", "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing} (header: {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            rel, label, split = (row["path"] or "").strip(), (row["label"] or "").strip(), (row["split"] or "").strip()
            pure = PurePosixPath(rel.replace("\\", "/"))
            if not rel or pure.is_absolute() or ".." in pure.parts:
                errors.append(f"{path}:{lineno}: path {rel!r} must be a non-empty path relative to {root}")
            elif split not in SPLITS:
                errors.append(f"{path}:{lineno}: split {split!r} is not one of {list(SPLITS)}")
            elif not label:
                errors.append(f"{path}:{lineno}: empty label")
            elif pure.as_posix() in seen:
                errors.append(f"{path}:{lineno}: {rel!r} already listed on line {seen[pure.as_posix()]}")
            else:
                seen[pure.as_posix()] = lineno
                items.append(RawItem(pure.as_posix(), label, split))
    if errors:
        raise InputError(f"{len(errors)} bad row(s):\n  " + "\n  ".join(errors))
    return Layout(items, _class_order({it.class_name for it in items}, options), {"file": str(path)})


# name -> function, or (module, function) for a layout in its own module, imported only when asked for
LAYOUTS: dict[str, Callable[[Path, dict[str, Any]], Layout] | tuple[str, str]] = {
    "imagefolder": list_imagefolder,
    "demo": list_demo,
    "ucf101": list_ucf101,
    "bar": list_bar,
    "era": list_era,
    "csv": list_csv,
    "coop": ("lmmreg.data.coop", "list_coop"),
}


def list_layout(layout: str, root: str | Path, options: dict[str, Any]) -> Layout:
    """Run the layout function named `layout` on the raw root."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: raw dataset folder not found (place or symlink the data there, "
                                "then `dvc add` it; see docs/datasets.md)")
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r} is not implemented (known: {sorted(LAYOUTS)})")
    fn = LAYOUTS[layout]
    if isinstance(fn, tuple):
        fn = getattr(importlib.import_module(fn[0]), fn[1])
    return fn(root, options)
