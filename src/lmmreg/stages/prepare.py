"""Stage `prepare@<dataset>`: raw files -> manifest (ids, labels, class names, split, sha256, size).

    python -m lmmreg.stages.prepare --dataset bar --raw data/raw/bar --out data/prepared/bar

The layout (`sources.<dataset>.layout`) lists the files; the list is checked, videos become one frame each
under `<out>/frames/` (cached, see :mod:`lmmreg.data.video`), then every image is decoded and checked
(:mod:`lmmreg.data.checks`) before any expensive stage runs. Writes `manifest.csv`, `classes.json`,
`manifest_meta.json` and `prepare_report.json` (counts, warnings, every skipped file and why, the manifest's digest;
for a layout that takes stock of the disk, `found`: what the split lists and what is absent or unlisted).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.checks import DatasetError, check_items, check_layout
from lmmreg.data.layouts import RawItem, list_layout
from lmmreg.data.manifest import manifest_digest, write_manifest
from lmmreg.data.sources import placement_help
from lmmreg.data.video import INDEX_NAME, extract_frames, is_video
from lmmreg.errors import InputError

log = logging.getLogger(__name__)


def build_frame_items(videos: list[RawItem], *, raw: Path, out: Path, frame: object, max_pixels: int,
                      frame_cache: Path | None) -> tuple[list[RawItem], list[dict]]:
    """One frame per video under `out/frames/` (decoded into `frame_cache` first when given, then copied)."""
    frames_dir = out / "frames"
    cache = frame_cache or frames_dir
    frames, failed = extract_frames([v.path for v in videos], raw_root=raw, frames_dir=cache, frame=frame,
                                    max_pixels=max_pixels)
    if frame_cache is not None:
        for name in frames.values():
            (frames_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cache / name, frames_dir / name)
    keep = set(frames.values()) | {INDEX_NAME}
    for f in sorted(frames_dir.rglob("*")):  # frames of videos no longer listed would linger in the output
        if f.is_file() and f.relative_to(frames_dir).as_posix() not in keep:
            f.unlink()
    split_of = {v.path: v for v in videos}
    items = [RawItem(f"frames/{frames[v.path]}", v.class_name, v.split, source=v.path) for v in videos
             if v.path in frames]
    bad = [{"path": str(raw / b["video"]), "id": b["video"], "split": split_of[b["video"]].split,
            "reason": b["reason"]} for b in failed]
    return items, bad


def main(params: Params, *, dataset: str, raw: Path, out: Path, frame_cache: Path | None = None) -> dict:
    src = params.source(dataset)
    known = {"train", "test", "classes"} | ({"val"} if src.layout == "coop" else set())  # CoOp's format has a val
    unknown = sorted(set(src.expected) - known)
    if unknown:
        raise InputError(f"sources.{dataset}.expected.{unknown[0]}: unknown count (known: {', '.join(sorted(known))})")
    try:
        layout = list_layout(src.layout, raw, src.options)
        check_layout(layout, dataset=dataset, root=raw)
    except (FileNotFoundError, DatasetError) as e:  # a missing or misplaced dataset: say what and where
        raise DatasetError(f"{dataset}: {e}\n  {placement_help(dataset, src.layout, raw)}") from None
    out.mkdir(parents=True, exist_ok=True)

    items, image_dir, image_root, bad = layout.items, raw, "raw", []
    videos = [it for it in items if is_video(it.path)]
    if videos:
        if len(videos) != len(items):
            other = next(it.path for it in items if not is_video(it.path))
            raise DatasetError(f"{dataset} ({raw}): {len(videos)} videos and {len(items) - len(videos)} other "
                               f"files (e.g. {raw / other}); use either videos or frames")
        items, bad = build_frame_items(videos, raw=raw, out=out, frame=src.options.get("frame", "middle"),
                                       max_pixels=params.prepare.max_image_pixels, frame_cache=frame_cache)
        image_dir, image_root = out, "manifest"

    try:
        records, report = check_items(items, layout.classes, root=image_dir, cfg=params.prepare, expected=src.expected,
                                      dataset=dataset, bad=bad, fixed_split=layout.notes.get("fixed_split", False))
    except DatasetError as e:  # what was found first (a partial download or a split mismatch), then every file
        found = layout.notes.get("found")
        raise (DatasetError(f"{dataset}: {found['diagnosis']}\n{e}") if found else e) from None
    write_manifest(records, layout.classes, out, image_root=image_root)
    report = {**report, "layout": src.layout, "image_root": image_root, **layout.notes,
              "manifest_digest": manifest_digest(out)}
    if videos:
        report["frame"] = src.options.get("frame", "middle")
    (out / "prepare_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log.info("%s: %d train / %d test images, %d classes, %d skipped -> %s", dataset, report["counts"]["train"],
             report["counts"]["test"], len(layout.classes), len(report["skipped"]), out)
    return report


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frame-cache", type=Path, default=None,
                        help="folder that keeps extracted video frames across runs (DVC empties --out before "
                             "re-running the stage); default: decode into --out/frames")
    run_stage(lambda a, p: main(p, dataset=a.dataset, raw=a.raw, out=a.out, frame_cache=a.frame_cache), parser)


if __name__ == "__main__":
    cli()
