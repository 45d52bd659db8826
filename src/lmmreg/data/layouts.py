"""Raw dataset layouts -> a list of candidate images (path, class, split) for `prepare`.

Each layout function takes the raw root and the layout options from `params.yaml`
(`sources.<name>.options`) and returns `(items, classes)`: items in a stable order, classes in label
order. Checking the images themselves is `prepare`'s job, not the layout's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmmreg.data.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class RawItem:
    path: str  # relative to the raw root, POSIX separators
    class_name: str
    split: str  # train | test


def _check_options(layout: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"sources.<dataset>.options.{unknown[0]}: unknown for layout {layout!r} "
                         f"(known: {sorted(allowed) or 'none'})")


def list_imagefolder(root: Path, options: dict[str, Any]) -> tuple[list[RawItem], list[str]]:
    """`<root>/<split>/<class>/<image>`; splits `train` and `test` (option `splits` renames them)."""
    _check_options("imagefolder", options, {"splits"})
    split_dirs = options.get("splits", {"train": "train", "test": "test"})
    items: list[RawItem] = []
    classes: set[str] = set()
    for split, dirname in split_dirs.items():
        split_root = root / dirname
        if not split_root.is_dir():
            raise FileNotFoundError(f"{split_root}: missing split folder for {split!r} (imagefolder layout)")
        for class_dir in sorted(p for p in split_root.iterdir() if p.is_dir()):
            classes.add(class_dir.name)
            for f in sorted(class_dir.rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    items.append(RawItem(f.relative_to(root).as_posix(), class_dir.name, split))
    return items, sorted(classes)


def list_demo(root: Path, options: dict[str, Any]) -> tuple[list[RawItem], list[str]]:
    """The generated demo: an imagefolder whose class order is the generator's label order."""
    import json

    _check_options("demo", options, set())
    items, _ = list_imagefolder(root, {})
    classes = [c["name"] for c in json.loads((root / "classes.json").read_text())]
    return items, classes


LAYOUTS: dict[str, Callable[[Path, dict[str, Any]], tuple[list[RawItem], list[str]]]] = {
    "imagefolder": list_imagefolder,
    "demo": list_demo,
}


def list_layout(layout: str, root: str | Path, options: dict[str, Any]) -> tuple[list[RawItem], list[str]]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: raw dataset folder not found (place or symlink the data there, "
                                "then `dvc add` it; see docs/datasets.md)")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not implemented (known: {sorted(LAYOUTS)})")
    return LAYOUTS[layout](root, options)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)
