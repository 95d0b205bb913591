"""Rebuild .dvc/plots/offline.html: DVC's plots page with vega inlined, so it renders offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so `dvc plots show` and
`dvc plots diff` give a blank page on a machine (or in a CI artifact) without internet access.
This fetches the pinned builds with `npm pack` (the npm registry), inlines them into a template
that has DVC's `{plot_divs}` placeholder but not its `{scripts}` one (that is where the CDN
tags would go), and writes the BSD-3-Clause notices beside it. Run: `make plots-template`.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

# vega-lite 5 is what DVC's plot specs ($schema vega-lite/v5) need; vega 5 and vega-embed 6 go
# with it. Bump together, then rerun and look at a `dvc plots show` page.
PACKAGES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js",
          "vega-embed": "build/vega-embed.min.js"}

PAGE = """<!DOCTYPE html>
<!-- DVC plots page that renders offline: {versions}
     inlined from the npm registry by tools/offline_plots_template.py (BSD-3-Clause: NOTICE).
     Do not edit by hand: rerun `make plots-template`. -->
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
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

NOTICE = """Third-party code inlined into offline.html
==========================================

{listing}

All three are published by the University of Washington Interactive Data Lab under the
BSD-3-Clause license below (vega-lite's LICENSE file, as shipped in its npm package). Their
minified builds also bundle small modules under permissive licenses (d3 modules: ISC;
fast-json-patch, json-stringify-pretty-compact: MIT; semver: ISC; tslib: 0BSD), as published
by the vega projects on the npm registry.

{license}"""


def npm_pack(name: str, version: str, workdir: Path) -> tarfile.TarFile:
    """Download one package tarball from the npm registry; return it opened."""
    out = subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=workdir,
                         check=True, capture_output=True, text=True).stdout.split()[-1]
    return tarfile.open(workdir / out)


def read_member(tar: tarfile.TarFile, path: str) -> str:
    """The text of package/<path> inside an npm tarball."""
    member = tar.extractfile(f"package/{path}")
    if member is None:
        raise FileNotFoundError(path)
    return member.read().decode("utf-8")


def build(dest: Path) -> None:
    """Write offline.html and NOTICE into `dest`."""
    scripts, listing, license_text = [], [], ""
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in PACKAGES.items():
            with npm_pack(name, version, Path(tmp)) as tar:
                code = read_member(tar, BUILDS[name])
                if name == "vega-lite":
                    license_text = read_member(tar, "LICENSE")
            # the source map is not shipped; a browser's devtools would only try to fetch it
            code = re.sub(r"^//# sourceMappingURL=.*$", "", code, flags=re.MULTILINE).strip()
            if "</script" in code.lower():
                raise SystemExit(f"{name}: its build contains '</script' and cannot be inlined")
            digest = hashlib.sha256(code.encode()).hexdigest()
            scripts.append(f"    <script>/* {name}@{version} */\n{code}\n    </script>")
            listing.append(f"- {name} {version} ({BUILDS[name]}, sha256 {digest}),"
                           f" https://github.com/vega/{name}")
    versions = ", ".join(f"{n} {v}" for n, v in PACKAGES.items())
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "offline.html").write_text(PAGE.format(versions=versions, scripts="\n".join(scripts)))
    (dest / "NOTICE").write_text(NOTICE.format(listing="\n".join(listing), license=license_text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".dvc/plots"))
    build(parser.parse_args().dest)


if __name__ == "__main__":
    main()
