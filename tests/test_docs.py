"""The documentation: the site under docs/ builds with `mkdocs build --strict` (a page
left out of the nav, a dead link or a link to a missing anchor fails it), and the
README stays a short front page that holds the two commands and links into the site."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MKDOCS = ROOT / "mkdocs.yml"


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MKDOCS.read_text())
    return loaded


def nav_pages(nav: Any) -> Iterator[str]:
    """Every page the nav names, at any depth."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


def test_the_site_builds_with_strict_checks(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    assert (site / "index.html").is_file()


def test_strict_checks_links_anchors_and_pages_left_out() -> None:
    # Without these, --strict would let a link to a missing anchor (or a page missing
    # from the nav) through.
    settings = config()
    assert settings["strict"] is True
    assert settings["theme"]["name"] == "material"
    assert settings["validation"] == {
        "omitted_files": "warn",
        "absolute_links": "warn",
        "unrecognized_links": "warn",
        "anchors": "warn",
    }


def test_every_page_is_in_the_nav() -> None:
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    in_nav = list(nav_pages(config()["nav"]))
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"
    assert set(in_nav) == pages


def test_the_readme_is_short_and_holds_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "the README is the front page: move the rest to docs/"
    section = text.split("\n## The two commands\n", 1)[1].split("\n## ", 1)[0]
    commands = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in commands] == [["make", "demo"], ["make", "test"]]
    assert "### Prerequisites" in section


def test_the_readme_links_every_page_and_only_pages_that_exist() -> None:
    text = README.read_text()
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#[^)\s]*)?\)", text)
    for link in links:
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"
    linked = {link.removeprefix("docs/") for link in links}
    for page in nav_pages(config()["nav"]):
        assert page == "index.md" or page in linked, f"the README does not link docs/{page}"
