"""Terminal tables that fit: no cell is ever cut.

A paper table (13 CIFAR-100 pairs) is far wider than a terminal. Here each column is measured
(its widest cell and its header; a pair `t->s` is shown as `t` over `→s`, and a long cell puts
its parenthesis on a second line where that saves tables) and the columns are dealt evenly
into as many tables as the width needs, each repeating the row labels. `split="teacher"` (or
`"student"`) makes one table per teacher (student), the other architecture as the column;
`transpose` puts pairs as rows and methods as columns.
Markdown, CSV, LaTeX and JSON are not affected: files keep the paper's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from kdrun.errors import UserError
from kdrun.report.choices import SPLITS
from kdrun.report.table import Report

ARROW = "->"
LONG_CELL = 18  # a longer cell shows its parenthesis on a second line: `71.6 ± 0.3` / `(2/3: …)`


@dataclass
class Block:
    title: str
    wide: pd.DataFrame  # formatted cells, the index holds the row labels
    headers: dict[str, str]  # column -> header text (may hold a line break)
    rules: set[str]


def _pair_parts(col: str) -> tuple[str, str, str] | None:
    """`[dataset:]teacher->student` -> (prefix, teacher, student), else None."""
    if ARROW not in col:
        return None
    left, student = col.split(ARROW, 1)
    prefix, _, teacher = left.rpartition(":")  # several datasets: `cifar100:t->s`
    return (prefix + ":" if prefix else ""), teacher, student


def _pair_header(name: str) -> str:
    parts = _pair_parts(name)
    if parts is None:
        return name
    prefix, teacher, student = parts
    return f"{prefix}{teacher}\n→{student}"


def _blocks(report: Report, transpose: bool, split: str) -> list[Block]:
    wide = report.wide
    rules = set(report.rules_after)
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: valid choices are {', '.join(SPLITS)}")
    if transpose:
        wide = wide.T
        wide.index.name = "pair" if all(_pair_parts(str(c)) for c in wide.index) else ""
        rules = set()
    if split == "auto":
        return [Block(report.title, wide, {c: _pair_header(str(c)) for c in wide.columns},
                      rules)]
    axis = list(wide.index if transpose else wide.columns)
    parts = {c: _pair_parts(str(c)) for c in axis}
    if not axis or any(p is None for p in parts.values()):
        raise UserError(f"--split {split}: the {report.name} table has no teacher->student "
                        "pairs to split by")
    by = 1 if split == "teacher" else 2
    other = 2 if split == "teacher" else 1
    groups: dict[str, list] = {}
    for c, p in parts.items():
        groups.setdefault(p[0] + p[by], []).append(c)  # type: ignore[index]
    out = []
    for key, members in groups.items():
        short = {c: parts[c][other] for c in members}  # type: ignore[index]
        title = f"{split} {key}" if out else f"{report.title}\n{split} {key}"
        if transpose:
            sub = wide.loc[members].rename(index=short)
            sub.index.name = "student" if split == "teacher" else "teacher"
            out.append(Block(title, sub, {c: str(c) for c in sub.columns}, set()))
        else:
            sub = wide[members].rename(columns=short)
            out.append(Block(title, sub, {c: str(c) for c in sub.columns}, rules))
    return out


def _cell(text: str) -> str:
    if cell_len(text) > LONG_CELL and " (" in text:
        return text.replace(" (", "\n(", 1)
    return text


def _width(texts: list[str]) -> int:
    return max([cell_len(line) for t in texts for line in str(t).split("\n")] or [1])


def _chunks(widths: list[int], label_width: int, width: int) -> list[list[int]]:
    """Column positions per table so that each table fits `width` (one column at least)."""
    out: list[list[int]] = []
    cur: list[int] = []
    used = 1 + label_width + 3  # left edge, the label column with padding and its border
    for i, w in enumerate(widths):
        if cur and used + w + 3 > width:
            out.append(cur)
            cur, used = [], 1 + label_width + 3
        cur.append(i)
        used += w + 3
    if cur:
        out.append(cur)
    return _balanced(out, widths, label_width, width)


def _balanced(chunks: list[list[int]], widths: list[int], label_width: int,
              width: int) -> list[list[int]]:
    """The same number of tables with the columns dealt evenly (3, 3, 3, 2, 2 rather than
    3, 3, 3, 3, 1), where every table still fits."""
    n, k = len(widths), len(chunks)
    if k < 2:
        return chunks
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    even, start = [], 0
    for size in sizes:
        even.append(list(range(start, start + size)))
        start += size
    fits = all(1 + label_width + 3 + sum(widths[i] + 3 for i in c) <= width for c in even)
    return even if fits else chunks


def tables(report: Report, width: int, transpose: bool = False, split: str = "auto") -> Group:
    """The report's terminal tables, each at most `width` columns wide, then its notes."""
    parts: list = []
    for block in _blocks(report, transpose, split):
        wide = block.wide
        labels = [str(i) for i in wide.index]
        label_width = _width([*labels, wide.index.name or ""])
        cols = list(wide.columns)
        wide = wide.map(str)
        widths = [_width([block.headers[c], *wide[c].tolist()]) for c in cols]
        chunks = _chunks(widths, label_width, width)
        folded = wide.map(_cell)  # long cells on two lines, where that saves tables
        f_widths = [_width([block.headers[c], *folded[c].tolist()]) for c in cols]
        f_chunks = _chunks(f_widths, label_width, width)
        if len(f_chunks) < len(chunks):
            wide, widths, chunks = folded, f_widths, f_chunks
        for k, chunk in enumerate(chunks):
            title = block.title if k == 0 else f"(continued, {k + 1}/{len(chunks)})"
            fits = 1 + label_width + 3 + sum(widths[i] + 3 for i in chunk) <= width
            t = Table(title=title, title_justify="left")
            t.add_column(wide.index.name or "", no_wrap=fits, min_width=label_width if fits
                         else None, overflow="fold")
            for i in chunk:
                t.add_column(block.headers[cols[i]], justify="right", no_wrap=fits,
                             min_width=widths[i] if fits else None, overflow="fold")
            for label, (_, row) in zip(labels, wide.iterrows(), strict=True):
                cells = [str(row.iloc[i]) for i in chunk]
                t.add_row(label, *cells, end_section=row.name in block.rules)
            parts.append(t)
    parts += [Text(f"  {n}", style="dim") for n in report.notes]
    return Group(*parts)
