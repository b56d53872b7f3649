"""Human-readable descriptions of protocols, generated from their params schema."""

from __future__ import annotations

from typing import Any

from .protocol import Protocol

__all__ = ["describe_lines", "param_rows"]


def _type_name(spec: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in spec:
        target = defs.get(spec["$ref"].split("/")[-1], {})
        if "enum" in target:
            return "choice: " + " | ".join(map(str, target["enum"]))
        return spec["$ref"].split("/")[-1]
    if "enum" in spec:
        return "choice: " + " | ".join(map(str, spec["enum"]))
    if "anyOf" in spec:
        return " or ".join(_type_name(s, defs) for s in spec["anyOf"])
    t = spec.get("type", "any")
    if t == "array":
        item = _type_name(spec.get("items", {}), defs)
        n = spec.get("minItems")
        size = f"{n}" if n is not None and n == spec.get("maxItems") else ""
        return f"list[{item}]{'×' + size if size else ''}"
    if spec.get("format") == "path":
        return "path"
    return {
        "number": "float",
        "integer": "int",
        "boolean": "bool",
        "string": "str",
        "null": "none",
    }.get(t, t)


def param_rows(cls: type[Protocol]) -> list[dict[str, Any]]:
    """One dict per param: name, type, default, unit, help, section, level, bounds, shown_when."""
    schema = cls.params_schema()
    defs = schema.get("$defs", {})
    rows = []
    for name, spec in schema.get("properties", {}).items():
        bounds = ", ".join(
            f"{k} {spec[k]}"
            for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
            if k in spec
        )
        rows.append(
            {
                "name": name,
                "type": _type_name(spec, defs),
                "default": spec.get("default"),
                "unit": spec.get("unit", ""),
                "help": spec.get("description", ""),
                "section": spec.get("section", ""),
                "level": spec.get("level", "normal"),
                "bounds": bounds,
                "shown_when": spec.get("shown_when"),
            }
        )
    return rows


def describe_lines(cls: type[Protocol]) -> list[str]:
    """The text ``emforge protocols describe`` prints."""
    lines = [f"{cls.id} (version {cls.version}): {cls.label}"]
    if cls.help:
        lines.append(f"  {cls.help}")
    if cls.inputs:
        lines.append("inputs:")
        for name, spec in cls.inputs.items():
            flags = ", ".join(
                x
                for x in ("optional" if spec.optional else "", "multiple" if spec.multiple else "")
                if x
            )
            lines.append(
                f"  {name}: {' | '.join(spec.kinds)}{' (' + flags + ')' if flags else ''} — {spec.help}"
            )
    if cls.outputs:
        lines.append("outputs:")
        for name, spec in cls.outputs.items():
            lines.append(f"  {name}: {spec.kind} — {spec.help}")
    lines.append("params:")
    section = None
    for row in param_rows(cls):
        if row["section"] != section:
            section = row["section"]
            lines.append(f"  [{section}]")
        extra = [f"default {row['default']!r}"]
        if row["unit"]:
            extra.append(f"unit {row['unit']}")
        if row["bounds"]:
            extra.append(row["bounds"])
        if row["level"] != "normal":
            extra.append(row["level"])
        if row["shown_when"]:
            sw = row["shown_when"]
            extra.append(f"shown when {sw['param']} {sw['op']} {sw['value']!r}")
        lines.append(f"    {row['name']} ({row['type']}; {'; '.join(extra)})")
        lines.append(f"        {row['help']}")
    if cls.citations:
        lines.append("citations:")
        lines += [f"  {c}" for c in cls.citations]
    return lines
