#!/usr/bin/env python3
"""Writes (or checks) the values table of helm/hookbridge/README.md from values.yaml.

The table is what helm-docs would generate from the same `# --` comments (helm-docs is a
Go binary that no package registry used here ships, so this script stands in for it and
check-helm.sh fails when the table is stale):

    python3 scripts/helm-values-table.py           # rewrite the table
    python3 scripts/helm-values-table.py --check   # exit 1 when it differs

A key is documented by the `# --` comment block right above it (continued by the `#`
lines that follow); its default is its value in values.yaml. Needs PyYAML.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "hookbridge"
START = "<!-- values-table:start (scripts/helm-values-table.py) -->"
END = "<!-- values-table:end -->"


def documented(lines):
    """(dotted key, description) for each key with a `# --` comment, in file order."""
    stack = []  # (indent, key)
    pending = None
    out = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        m = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*|\"[^\"]+\"):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2).strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending is not None:
            out.append((".".join(k for _, k in stack), " ".join(p for p in pending if p)))
            pending = None
    return out


def lookup(values, dotted):
    cur = values
    for part in dotted.split("."):
        cur = cur[part]
    return cur


def kind(value):
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, desc in documented(text.splitlines()):
        value = lookup(values, key)
        default = json.dumps(value, separators=(",", ":"))
        if len(default) > 80:
            default = "see values.yaml"
        default = default.replace("|", "\\|")
        desc = desc.replace("|", "\\|")
        rows.append(f"| {key} | {kind(value)} | `{default}` | {desc} |")
    return "\n".join(rows)


def main():
    readme = CHART / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        sys.exit(f"{readme}: markers {START} / {END} missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{table()}\n{END}{tail}"
    if "--check" in sys.argv:
        if new != text:
            sys.exit(f"{readme.relative_to(ROOT)}: the values table is stale; run python3 scripts/helm-values-table.py")
        print(f"{readme.relative_to(ROOT)}: values table up to date")
        return
    readme.write_text(new)


if __name__ == "__main__":
    main()
