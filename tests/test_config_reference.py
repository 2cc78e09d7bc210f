"""docs/config_reference.md is the generated reference of the current conf/ (every command and group option)."""

from __future__ import annotations

from pathlib import Path

from hedgenet.config_reference import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    page = (ROOT / "docs" / "config_reference.md").read_text()
    assert page == reference_markdown(ROOT / "conf"), (
        "docs/config_reference.md is out of date: python -m hedgenet.config_reference > docs/config_reference.md")
    for path in (ROOT / "conf").rglob("*.yaml"):
        rel = path.relative_to(ROOT / "conf")
        assert (f"conf/{rel}" in page) or (f"`{rel.parent}={rel.stem}`" in page), rel
