"""The manual: the README stays short, the site builds with `mkdocs build --strict`, every
page is in the navigation, and a broken link or an orphan page fails the build."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack.servers import ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")


def build(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=root, capture_output=True, text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"})


def nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        for value in entry.values():
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_site_builds_strictly(tmp_path):
    result = build(ROOT, tmp_path)
    assert result.returncode == 0, result.stderr


def test_every_page_is_in_the_navigation():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert sorted(nav_pages(config["nav"])) == pages


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("planted, reported", [
    (("api.md", "See [the missing page](no-such-page.md)."), "no-such-page.md"),
    (("api.md", "See [a missing section](identity.md#no-such-section)."), "no-such-section"),
    (("orphan.md", "# A page no navigation names"), "orphan.md"),
])
def test_a_broken_link_or_an_orphan_page_fails_the_build(tmp_path, planted, reported):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "docs", copy / "docs")
    page, text = planted
    path = copy / "docs" / page
    path.write_text((path.read_text() if path.exists() else "") + f"\n{text}\n")
    result = build(copy, tmp_path)
    assert result.returncode != 0
    assert "WARNING" in result.stderr and reported in result.stderr, result.stderr
