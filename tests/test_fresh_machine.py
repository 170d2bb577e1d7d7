"""A fresh clone: the Makefile uses ../shared/data only when it exists (else the hub), and the README and docs
link only files inside the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_makefile_points_at_shared_data_only_when_it_exists(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Makefile", clone / "Makefile")
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(["make", "-s", "data-dir"], cwd=clone, capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "GSI_DATA_DIR unset: datasets from the hub"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    out = subprocess.run(["make", "-s", "data-dir"], cwd=clone, capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == f"GSI_DATA_DIR={tmp_path / 'shared' / 'data'}"
    out = subprocess.run(["make", "-s", "data-dir"], cwd=clone, capture_output=True, text=True,
                         env={**env, "GSI_DATA_DIR": "/mine"}, check=True)
    assert out.stdout.strip() == "GSI_DATA_DIR=/mine"  # the user's choice wins


def test_docs_link_only_files_inside_the_repository():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(REPO), f"{doc.name} links {target}, outside the repository"
            assert path.exists(), f"{doc.name} links {target}, which does not exist"
