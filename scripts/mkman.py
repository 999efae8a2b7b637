#!/usr/bin/python3
"""Turns petrel's man page sources (man/*.md, a small Markdown subset) into roff.

Usage: mkman.py SOURCE.md OUT.N
Subset: a first line "% NAME(SECTION) | title"; "# HEADING" -> .SH; "## Sub" -> .SS;
paragraphs; "- item" lists; "term\n: definition" -> .TP; ``` blocks -> .nf/.fi;
`code` and **bold** -> bold, *italic* -> italic. Nothing else is interpreted.
SPDX-License-Identifier: Apache-2.0
"""
import re
import sys


def esc(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return s


def inline(s):
    s = esc(s)
    s = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"\\fI\1\\fR", s)
    if s.startswith(".") or s.startswith("'"):
        s = "\\&" + s
    return s


def convert(text):
    lines = text.split("\n")
    m = re.match(r"^% ([\w.-]+)\((\d)\) \| (.*)$", lines[0])
    if not m:
        raise SystemExit("first line must be '% NAME(SECTION) | title'")
    name, sect, title = m.groups()
    out = [f'.TH "{name.upper()}" "{sect}" "" '
           f'"petrel" "{title}"']
    i, in_code = 1, False
    para = []

    def flush():
        if para:
            out.append(inline(" ".join(para)))
            para.clear()

    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("```"):
            flush()
            out.append(".PP\n.nf\n.RS 4" if not in_code else ".RE\n.fi")
            in_code = not in_code
            continue
        if in_code:
            out.append(esc(line) if not line.startswith(".") else "\\&" + esc(line))
            continue
        if line.startswith("## "):
            flush()
            out.append(".SS " + inline(line[3:]))
        elif line.startswith("# "):
            flush()
            out.append(".SH " + inline(line[2:].upper()))
        elif line.startswith("- "):
            flush()
            out.append(".IP \\(bu 2\n" + inline(line[2:]))
        elif i < len(lines) and lines[i].startswith(": "):
            flush()
            out.append(".TP\n" + inline(line))
            out.append(inline(lines[i][2:]))
            i += 1
        elif not line.strip():
            flush()
            out.append(".PP")
        else:
            para.append(line.strip())
    flush()
    # collapse repeated paragraph marks
    roff = "\n".join(out)
    roff = re.sub(r"(\.PP\n)+", ".PP\n", roff)
    roff = re.sub(r"\.PP\n(\.S[HS] )", r"\1", roff)
    return roff.rstrip("\n.P") + "\n" if roff.endswith(".PP") else roff + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        roff = convert(f.read())
    with open(sys.argv[2], "w") as f:
        f.write(roff)
