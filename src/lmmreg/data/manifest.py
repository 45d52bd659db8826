"""The manifest: one row per usable image, the key every later artifact aligns to.

Columns: id (stable: the raw file's path relative to the raw dataset root; for a frame `prepare`
extracted from a video, the video's path), path (relative to the image root, see `resolve_image_root`),
label, class_name, split (train|val|test; val only where the dataset has its own, e.g. CoOp's split files),
sha256, width, height. `classes.json` beside it fixes the class order.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lmmreg.errors import InputError

FIELDS = ("id", "path", "label", "class_name", "split", "sha256", "width", "height")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    id: str
    path: str
    label: int
    class_name: str
    split: str
    sha256: str
    width: int
    height: int


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


IMAGE_ROOTS = ("raw", "manifest")


def write_manifest(records: list[Record], classes: list[str], out_dir: str | Path, *, image_root: str = "raw") -> None:
    """Write `manifest.csv`, `classes.json` and `manifest_meta.json`.

    `image_root` says what `path` is relative to: "raw" (the dataset's raw folder, the usual case) or
    "manifest" (files `prepare` derived itself and keeps beside the manifest, e.g. ERA's video frames).
    """
    if image_root not in IMAGE_ROOTS:
        raise ValueError(f"image_root must be one of {IMAGE_ROOTS}, got {image_root!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in sorted(records, key=lambda r: (SPLITS.index(r.split), r.label, r.id)):
            w.writerow(asdict(r))
    (out_dir / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
    (out_dir / "manifest_meta.json").write_text(json.dumps({"image_root": image_root}) + "\n")


def resolve_image_root(manifest_dir: str | Path, raw_root: str | Path) -> Path:
    """The folder that the manifest's `path` column is relative to."""
    meta_path = Path(manifest_dir) / "manifest_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"image_root": "raw"}
    return Path(manifest_dir) if meta.get("image_root") == "manifest" else Path(raw_root)


def load_manifest(manifest_dir: str | Path) -> tuple[list[Record], list[str]]:
    """Read `manifest.csv` + `classes.json`, checking the columns, ids and labels."""
    d = Path(manifest_dir)
    path = d / "manifest.csv"
    classes = json.loads((d / "classes.json").read_text())
    records: list[Record] = []
    seen: set[str] = set()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise InputError(f"{path}: columns {reader.fieldnames} != expected {list(FIELDS)}")
        for lineno, row in enumerate(reader, start=2):
            try:
                r = Record(row["id"], row["path"], int(row["label"]), row["class_name"], row["split"],
                           row["sha256"], int(row["width"]), int(row["height"]))
            except (TypeError, ValueError) as e:
                raise InputError(f"{path}:{lineno}: bad row {row} ({e})") from e
            if r.id in seen:
                raise InputError(f"{path}:{lineno}: duplicate id {r.id!r}")
            if r.split not in SPLITS:
                raise InputError(f"{path}:{lineno}: split {r.split!r} not in {SPLITS}")
            if not 0 <= r.label < len(classes) or classes[r.label] != r.class_name:
                raise InputError(f"{path}:{lineno}: label {r.label} / class {r.class_name!r} "
                                 f"disagrees with classes.json")
            seen.add(r.id)
            records.append(r)
    return records, classes


def manifest_digest(manifest_dir: str | Path) -> str:
    """Content hash of the manifest (ids, labels, splits, image hashes): identifies the data a run saw."""
    d = Path(manifest_dir)
    h = hashlib.sha256()
    for name in ("manifest.csv", "classes.json"):
        h.update((d / name).read_bytes())
    return h.hexdigest()[:16]
