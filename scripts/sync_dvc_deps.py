"""Rewrite the `src/` deps of every dvc.yaml stage to exactly the code it imports (tests/test_dvc_yaml.py checks it).

    python scripts/sync_dvc_deps.py          # rewrite dvc.yaml in place, print what changed
    python scripts/sync_dvc_deps.py --check  # exit 1 if anything would change

A stage's code is lmmreg.plan.source_files of `lmmreg.stages.<stage>` (lazy imports and modules a registry names by
string included); the plan stage also digests the train stage's code (lmmreg.plan.code_digest: every method's
module), and the train stages list no code (it reaches them through their plan). A folder is listed whole where
every source file in it is imported. Only the `- src/...` lines of a stage's deps change; comments stay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmmreg.plan import SRC, _holds_no_logic, code_digest, source_files  # noqa: E402

CODE_IN_PLAN = {"train": "plan"}


def stage_code(stage: str) -> set[Path]:
    files = set(source_files(f"lmmreg.stages.{stage}"))
    if stage == CODE_IN_PLAN["train"]:
        files |= {SRC / f for f in code_digest()["files"]}
    return files


def _inert(f: Path) -> bool:
    return f.name == "__init__.py" and _holds_no_logic(f)  # source_files leaves these out: they change nothing


def compress(files: set[Path]) -> list[str]:
    """Repo-relative deps: a folder (below lmmreg/) where the stage imports every source file in it, else the files."""
    out = set(files)
    for folder in sorted({f.parent for f in files}, key=lambda d: -len(d.parts)):
        if folder == SRC / "lmmreg":
            continue
        every = {f for f in folder.rglob("*.py") if "__pycache__" not in f.parts and not _inert(f)}
        if every <= files:
            out = {x for x in out if folder not in x.parents} | {folder}
    return sorted(str(p.relative_to(ROOT)) for p in out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    path = ROOT / "dvc.yaml"
    spec = yaml.safe_load(path.read_text())["stages"]
    lines = path.read_text().split("\n")
    changed = []
    for name in spec:
        if name in CODE_IN_PLAN:
            continue
        want = compress(stage_code(name))
        start = next(i for i, line in enumerate(lines) if line.strip() == f"{name}:" and not line.startswith("    "))
        dep_i = next(i for i in range(start, len(lines)) if lines[i].strip() == "deps:")
        src_idx = [i for i in range(dep_i + 1, len(lines)) if lines[i].strip().startswith("- src/")
                   and all(lines[k].strip().startswith(("- ", "#")) for k in range(dep_i + 1, i + 1))]
        have = [lines[i].strip()[2:] for i in src_idx]
        if sorted(have) == want:
            continue
        indent = lines[src_idx[0]][:len(lines[src_idx[0]]) - len(lines[src_idx[0]].lstrip())]
        changed.append((name, sorted(set(have) - set(want)), sorted(set(want) - set(have))))
        for i in reversed(src_idx):
            del lines[i]
        lines[src_idx[0]:src_idx[0]] = [f"{indent}- {d}" for d in want]
    for name, gone, new in changed:
        print(f"{name}: -{gone} +{new}")
    if changed and not args.check:
        path.write_text("\n".join(lines))
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
