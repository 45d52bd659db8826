"""Build `.dvc/plots/offline.html`, the page `dvc plots show` fills (`plots.html_template` in .dvc/config), with
Vega, Vega-Lite and Vega-Embed inlined, so the plots open on a machine without internet. DVC's own page loads
them from a CDN: on an offline cluster it is a blank page.

    python scripts/build_offline_plots.py          # needs `npm` and the npm registry; writes the two files below

The versions are the ones DVC's page names (dvc_render.vega.VegaRenderer.SCRIPTS), so the plots render as DVC
draws them. The template omits DVC's `{scripts}` placeholder, which is where DVC would put its CDN tags. The
three packages are BSD-3-Clause; their minified builds bundle their dependencies (d3 and others, all permissive:
BSD, ISC, MIT, 0BSD, CC0), whose licence texts go to `.dvc/plots/offline-licenses.txt`.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".dvc" / "plots" / "offline.html"
LICENSES = OUT.with_name("offline-licenses.txt")
# package -> its minified browser build inside the npm tarball
PACKAGES = {"vega@5.20.2": "package/build/vega.min.js", "vega-lite@5.2.0": "package/build/vega-lite.min.js",
            "vega-embed@6.18.2": "package/build/vega-embed.min.js"}

PAGE = """<!DOCTYPE html>
<!-- lmmreg: DVC's plots page with {names} inlined (built by scripts/build_offline_plots.py),
     so `dvc plots show` works offline. BSD-3-Clause, University of Washington Interactive Data Lab; their
     bundled dependencies' licences: offline-licenses.txt beside this file.
{license}
-->
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def npm_pack(spec: str, dest: Path) -> tarfile.TarFile:
    name = subprocess.run(["npm", "pack", "--silent", spec], cwd=dest, check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    return tarfile.open(dest / name)


def bundled_licenses(tmp: Path) -> str:
    """The licence text of every package the three install (their dependency tree: what the builds bundle)."""
    (tmp / "package.json").write_text('{"name": "offline-plots", "version": "0.0.0", "private": true}')
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--ignore-scripts", "--legacy-peer-deps",
                    *PACKAGES], cwd=tmp, check=True)
    parts = []
    for pkg in sorted((tmp / "node_modules").rglob("package.json")):
        folder = pkg.parent
        if folder.parent.name != "node_modules" and folder.parent.parent.name != "node_modules":
            continue  # a package.json inside a package (test fixtures), not a package
        meta = json.loads(pkg.read_text())
        if "name" not in meta or "version" not in meta:
            continue
        texts = [p.read_text(errors="replace").strip() for p in sorted(folder.iterdir())
                 if p.is_file() and p.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE"))]
        head = f"{meta['name']} {meta['version']} ({meta.get('license', 'see its package')})"
        parts.append(head + "\n" + "-" * len(head) + "\n" + ("\n\n".join(texts) or "(no licence file shipped)"))
    return "\n\n\n".join(dict.fromkeys(parts)) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scripts, license_text = [], ""
        for spec, member in PACKAGES.items():
            with npm_pack(spec, tmp) as tar:
                js = tar.extractfile(member).read().decode()
                if not license_text:
                    license_text = tar.extractfile("package/LICENSE").read().decode().strip()
            if "</script" in js.lower():
                raise SystemExit(f"{spec}: its build contains '</script', which would end the inline script")
            scripts.append(f"    <script>/* {spec} */\n{js.strip()}\n    </script>")
        page = PAGE.format(names=", ".join(PACKAGES), license=license_text, scripts="\n".join(scripts))
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(page)
        LICENSES.write_text(bundled_licenses(tmp))
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB) and {LICENSES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
