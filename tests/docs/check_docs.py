#!/usr/bin/python3
"""The Markdown the repository ships (README.md, docs/, results/*/notes.md and report.md):

  - every table row has as many cells as its header (a row with more shows its extra
    cells as text after the table in some renderers and not at all in others);
  - every relative link names a file or directory that exists.
Usage: check_docs.py SOURCE_DIR"""
import re
import sys
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def cells(row):
    """The cells of a table row: split at every | but \\| (GitHub splits inside code spans
    too)."""
    out, current, i = [], "", 0
    row = row.strip()
    while i < len(row):
        ch = row[i]
        if ch == "\\" and i + 1 < len(row):
            current += row[i:i + 2]
            i += 2
            continue
        if ch == "|":
            out.append(current)
            current = ""
        else:
            current += ch
        i += 1
    out.append(current)
    # a row starts and ends with |: drop the empty ends
    return out[1:-1] if row.startswith("|") and row.endswith("|") else out


def check_tables(path, text, problems):
    lines = text.split("\n")
    in_code = False
    header = None
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            header = None
            continue
        if in_code or not line.lstrip().startswith("|"):
            header = None
            continue
        if header is None:
            header = (n, len(cells(line)))
            continue
        if len(cells(line)) != header[1]:
            problems.append(f"{path}:{n}: {len(cells(line))} cells, the header (line {header[0]}) has {header[1]}")


def check_links(path, text, source, problems):
    in_code = False
    for n, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            file = target.split("#")[0]
            if file and not (path.parent / file).exists():
                problems.append(f"{path.relative_to(source)}:{n}: link to {target}: no such file")


def main():
    source = Path(sys.argv[1])
    files = ([source / "README.md"] + sorted((source / "docs").glob("*.md"))
             + sorted(source.glob("results/*/notes.md")) + sorted(source.glob("results/*/report.md")))
    problems = []
    for path in files:
        text = path.read_text()
        check_tables(path.relative_to(source), text, problems)
        check_links(path, text, source, problems)
    for p in problems:
        print("FAIL:", p)
    print(f"{len(files)} files: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
