"""`dvc plots show` / `dvc plots diff` pages work without internet: vega is inlined, no CDN."""

from __future__ import annotations

import json
import re
import runpy
import shutil
from pathlib import Path

from tests.conftest import ROOT, run

TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def plot_repo(path: Path) -> Path:
    """A git + DVC repo with the template's DVC config and one committed plot, then changed."""
    path.mkdir(parents=True)
    run("git init -q && dvc init -q", path)
    shutil.copy2(ROOT / ".dvc" / "config", path / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")
    (path / "dvc.yaml").write_text("plots:\n  - loss.json:\n      x: step\n      y: loss\n")
    write_loss(path, 1.0)
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm plot", path)
    write_loss(path, 0.5)
    return path


def write_loss(repo: Path, scale: float) -> None:
    rows = [{"step": i, "loss": scale / (i + 1)} for i in range(5)]
    (repo / "loss.json").write_text(json.dumps(rows))


def assert_renders_offline(page: str) -> None:
    assert not REMOTE_SCRIPT.search(page), "a script is loaded from the network"
    assert "cdn.jsdelivr.net" not in page
    for library in ("vega@", "vega-lite@", "vega-embed@"):
        assert f"<script>/* {library}" in page  # inlined, not linked
    assert "vegaEmbed('#loss_json'" in page  # DVC's plot div, filled into {plot_divs}


def test_plots_show_and_diff_render_without_internet(tmp_path: Path) -> None:
    repo = plot_repo(tmp_path / "project")
    run(["dvc", "plots", "show", "-o", "show"], repo)
    assert_renders_offline((repo / "show" / "index.html").read_text())

    run(["dvc", "plots", "diff", "HEAD", "-o", "diff"], repo)
    page = (repo / "diff" / "index.html").read_text()
    assert_renders_offline(page)
    assert '"rev": "HEAD"' in page and '"rev": "workspace"' in page


def test_template_holds_the_pinned_versions_and_their_notice() -> None:
    pinned = runpy.run_path(str(ROOT / "tools" / "offline_plots_template.py"))["PACKAGES"]
    page = TEMPLATE.read_text()
    notice = (TEMPLATE.parent / "NOTICE").read_text()
    for name, version in pinned.items():
        assert f"<script>/* {name}@{version} */" in page
        assert f"- {name} {version} " in notice
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN tags have no slot
    assert "Redistribution and use in source and binary forms" in notice
