"""Generate the protocol reference (``docs/reference/``) from the params schemas.

``python -m emforge.docgen docs/reference`` writes one Markdown page per built-in plugin and
an index; ``tests/framework/test_docgen.py`` checks the committed pages are current, so the
reference never drifts from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .engine.describe import param_rows
from .plugins import Registry, discover

__all__ = ["reference_pages", "write_reference"]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _protocol_section(reg: Registry, pid: str) -> list[str]:
    cls = reg.load(pid)
    lines = [f"## `{pid}` — {cls.label}", "", f"Version {cls.version}. {cls.help}", ""]
    if cls.inputs:
        lines += ["| input | kinds | required | help |", "|---|---|---|---|"]
        lines += [
            f"| `{n}` | {' or '.join(s.kinds)} | {'no' if s.optional else 'yes'}"
            f"{' (several)' if s.multiple else ''} | {_cell(s.help)} |"
            for n, s in cls.inputs.items()
        ]
        lines.append("")
    if cls.outputs:
        lines += ["| output | kind | help |", "|---|---|---|"]
        lines += [f"| `{n}` | {s.kind} | {_cell(s.help)} |" for n, s in cls.outputs.items()]
        lines.append("")
    lines += [
        "| param | type | default | unit | section | level | help |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in param_rows(cls):
        shown = row["shown_when"]
        note = f" Shown when `{shown['param']} {shown['op']} {shown['value']!r}`." if shown else ""
        bounds = f" ({row['bounds']})" if row["bounds"] else ""
        lines.append(
            f"| `{row['name']}` | {_cell(row['type'])} | `{row['default']!r}` | {row['unit']} | "
            f"{row['section']} | {row['level']} | {_cell(row['help'])}{bounds}{note} |"
        )
    if cls.citations:
        lines += ["", "Citations: " + "; ".join(cls.citations)]
    return lines + [""]


def reference_pages(reg: Registry | None = None) -> dict[str, str]:
    """Page name -> Markdown text for every plugin of the emforge distribution."""
    reg = reg or discover()
    pages: dict[str, str] = {}
    index = [
        "# Protocol reference",
        "",
        "Generated from the params schemas by `python -m emforge.docgen "
        "docs/reference`; do not edit by hand.",
        "",
    ]
    for name, info in sorted(reg.plugins.items()):
        if info.distribution != "emforge":
            continue
        ids = sorted(pid for pid, e in reg.protocols.items() if e.plugin == name)
        if not ids:
            continue
        body = [f"# Plugin `{name}`", "", info.manifest.description, ""]
        for pid in ids:
            body += _protocol_section(reg, pid)
        pages[f"{name}.md"] = "\n".join(body).rstrip() + "\n"
        index.append(f"- [`{name}`]({name}.md): " + ", ".join(f"`{p}`" for p in ids))
    pages["index.md"] = "\n".join(index) + "\n"
    return pages


def write_reference(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in reference_pages().items():
        (folder / name).write_text(text, encoding="utf-8")
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_reference(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference")):
        print(path)
