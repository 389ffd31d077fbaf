"""LaTeX rendering: a booktabs table, best cell per column in bold, ready for a paper.

The structure is fixed (one `table` float, `tabular` with `l` then one `r` per column,
`\\toprule`/`\\midrule`/`\\bottomrule`, rules between row groups) so a diff of two reports
shows only changed numbers. Title and notes go in comments and the caption.
"""

from __future__ import annotations

import re

from kdrun.report.table import Report, best_cells

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}"}
_SYMBOLS = {"±": r"$\pm$", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "ρ": r"$\rho$",
            "τ": r"$\tau$", "‖": r"$\|$", "·": r"$\cdot$", "->": r"$\to$", "→": r"$\to$"}
_TOKEN = re.compile("|".join(re.escape(k) for k in sorted([*_SPECIAL, *_SYMBOLS], key=len,
                                                              reverse=True)))


def escape(text: str) -> str:
    return _TOKEN.sub(lambda m: _SPECIAL.get(m.group(0)) or _SYMBOLS[m.group(0)], str(text))


def latex(report: Report) -> str:
    wide = report.wide
    best = best_cells(report)
    rules = set(report.rules_after)
    lines = [f"% kdrun report: {report.title}"]
    lines += [f"% {n}" for n in report.notes]
    lines += [r"\begin{table}[t]", r"  \centering",
              rf"  \caption{{{escape(report.title)}}}",
              rf"  \label{{tab:kdrun-{report.name}}}",
              rf"  \begin{{tabular}}{{l{'r' * len(wide.columns)}}}", r"    \toprule",
              "    " + " & ".join(escape(c) for c in [wide.index.name or "", *wide.columns])
              + r" \\", r"    \midrule"]
    for idx, row in wide.iterrows():
        cells = [escape(idx)]
        for col, value in row.items():
            text = escape(value)
            cells.append(rf"\textbf{{{text}}}" if (idx, col) in best and text else text)
        lines.append("    " + " & ".join(cells) + r" \\")
        if idx in rules:
            lines.append(r"    \midrule")
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
