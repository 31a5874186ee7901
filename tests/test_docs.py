"""The documentation site builds: ``mkdocs build --strict`` (every warning is an error: broken
links and anchors, missing pages, docstrings that fail to render, notebooks that fail to
convert). Skipped only where MkDocs is not installed (``pip install -r requirements-docs.txt``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 300


def _mkdocs() -> list[str]:
    pytest.importorskip("mkdocs", reason="pip install -r requirements-docs.txt")
    return [sys.executable, "-m", "mkdocs"]


def test_docs_sources_exist():
    for page in ("index.md", "installation.md", "quickstart.md", "concepts.md", "changelog.md",
                 "notebooks/index.md", "api/index.md"):
        assert (ROOT / "docs" / page).is_file(), page
    for picture in ("kernel.png", "thresholds.png", "activation.png"):
        assert (ROOT / "docs" / "img" / picture).is_file(), "run python docs/gen_figures.py"
    assert (ROOT / "requirements-docs.txt").is_file()


def test_mkdocs_build_strict(tmp_path):
    command = _mkdocs() + ["build", "--strict", "--site-dir", str(tmp_path / "site")]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    # Every notebook of examples/ is a page, and the API reference rendered its modules.
    for notebook in sorted((ROOT / "examples").glob("[0-9][0-9]_*.ipynb")):
        assert (site / "examples" / notebook.stem / "index.html").is_file(), notebook.name
    kernel_api = (site / "api" / "kernel" / "index.html").read_text()
    assert "threshold_table" in kernel_api
    changelog = (site / "changelog" / "index.html").read_text()
    assert "Unreleased" in changelog


def test_every_spec_section_the_code_cites_is_in_docs_spec():
    """The code cites "SPEC §N"; docs/spec.md carries sections 1–11 under those numbers."""
    import re

    spec = (ROOT / "docs" / "spec.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", spec, re.M)}
    assert sections == set(range(1, 12))
    cited = set()
    for path in (ROOT / "ttfs_plugin").rglob("*.py"):
        for first, last in re.findall(r"SPEC §(\d+)(?:[–-](\d+))?", path.read_text()):
            cited.update(range(int(first), int(last or first) + 1))
    assert cited and cited <= sections, sorted(cited - sections)
