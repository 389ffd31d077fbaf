"""`--plot FILE.png` for the `diminishing`, `curves` and `delta` tables (matplotlib, optional).

matplotlib comes with the `plot` extra; without it the user gets one line saying how to
install it, not a traceback. Plots are drawn from a report's long form, so they show exactly
the numbers of the table.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from kdrun.errors import UserError
from kdrun.report.table import Report

PLOTTABLE = ("diminishing", "curves", "delta")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'kdrun[plot]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot(report: Report, path: Path) -> Path:
    """Draw the report into `path` (PNG); returns the path."""
    if report.name not in PLOTTABLE:
        raise UserError(f"--plot: available for {', '.join(PLOTTABLE)}, not {report.name}")
    if report.long.empty:
        raise UserError(f"--plot: the {report.name} table is empty, nothing to draw")
    plt = _pyplot()
    fig = {"diminishing": _diminishing, "curves": _curves, "delta": _delta}[report.name](
        plt, report.long)
    width_in = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(report.title, width=int(width_in * 14)), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _grid(plt: Any, n: int, width: float = 5.0, height: float = 3.6) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _diminishing(plt: Any, long: pd.DataFrame) -> Any:
    groups = list(long.groupby(["dataset", "student"], sort=False))
    fig, axes = _grid(plt, len(groups))
    for ax, ((dataset, student), grp) in zip(axes, groups, strict=True):
        ladder = grp[grp["teacher"].notna()].sort_values("teacher_top1")
        for label, rows in ladder.groupby("row", sort=False):
            rows = rows[rows["n"] > 0]
            line = ax.errorbar(rows["teacher_top1"], rows["mean"], yerr=rows["std"].fillna(0),
                               marker="o", capsize=3, label=label)
            pub = rows[rows["paper"].notna() & rows["paper_teacher_top1"].notna()]
            if len(pub):
                ax.plot(pub["paper_teacher_top1"], pub["paper"], ls=":", marker="x",
                        color=line[0].get_color(), label=f"{label} (paper)")
        for r in grp[grp["teacher"].isna()].to_dict("records"):
            if r["n"]:
                ax.axhline(r["mean"], ls="--", color="grey", lw=1, label=f"{r['row']} alone")
        for t, x in ladder.groupby("teacher", sort=False)["teacher_top1"].first().items():
            ax.annotate(str(t), (x, 0), xycoords=("data", "axes fraction"), fontsize=7,
                        rotation=90, va="bottom", ha="right", color="grey")
        ax.set_title(f"{dataset}: {student}", fontsize=9)
        ax.set_xlabel("teacher top-1 (%)")
        ax.set_ylabel("student top-1 (%)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig


def _curves(plt: Any, long: pd.DataFrame) -> Any:
    comps = sorted(q for q in set(long["quantity"]) if q.startswith("loss."))
    panels = ["test_top1", "train_loss", *comps][:9]
    panels = [p for p in panels if p in set(long["quantity"])]
    fig, axes = _grid(plt, len(panels), width=4.5, height=3.2)
    keys = list(dict.fromkeys(zip(long["series"], long["row"], strict=True)))
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    color = {k: cmap(i % cmap.N) for i, k in enumerate(keys)}  # one colour per series
    for ax, q in zip(axes, panels, strict=True):
        sub = long[long["quantity"] == q]
        for (series, row), grp in sub.groupby(["series", "row"], sort=False):
            grp = grp.sort_values("epoch")
            std = grp["std"].fillna(0)
            c = color[(series, row)]
            ax.plot(grp["epoch"], grp["mean"], color=c, label=f"{series} · {row}")
            ax.fill_between(grp["epoch"], grp["mean"] - std, grp["mean"] + std, alpha=0.15,
                            color=c)
        ax.set_title(q, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    return fig


def _delta(plt: Any, long: pd.DataFrame) -> Any:
    pair_names = list(dict.fromkeys(long["pair"]))
    rows = list(dict.fromkeys(long["row"]))
    fig, axes = _grid(plt, 1, width=max(5.0, 1.2 * len(pair_names) * max(1, len(rows)) / 3))
    ax = axes[0]
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        sub = long[long["row"] == row].set_index("pair").reindex(pair_names)
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(pair_names))]
        lo = (sub["mean"] - sub["lo"]).fillna(0).clip(lower=0)
        hi = (sub["hi"] - sub["mean"]).fillna(0).clip(lower=0)
        ax.bar(xs, sub["mean"].fillna(0), width, yerr=[lo, hi], capsize=2, label=row)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(pair_names)))
    ax.set_xticklabels(pair_names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"top-1 gain over {long['baseline'].iloc[0]} (points, 95% CI)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig
