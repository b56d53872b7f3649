"""The committed protocol reference matches what the params schemas generate (no drift)."""

from pathlib import Path

from emforge.docgen import reference_pages

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_reference_pages_are_current():
    pages = reference_pages()
    assert "import.md" in pages and "index.md" in pages
    for name, text in pages.items():
        committed = REFERENCE / name
        assert committed.exists(), (
            f"{committed} missing: run python -m emforge.docgen docs/reference"
        )
        assert committed.read_text(encoding="utf-8") == text, (
            f"{committed} is stale: run python -m emforge.docgen docs/reference"
        )


def test_reference_lists_every_param_with_unit():
    text = reference_pages()["import.md"]
    assert "| `pixel_size` | float or none | `None` | Å |" in text
    assert "choice: auto \\| star \\| text \\| eman2" in text
