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
from kdrun.report.choices import PLOTTABLE
from kdrun.report.table import Report


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'kdrun[plot]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


# Panel titles and y labels of the curves plot, by quantity; `loss.<name>` is a component.
QUANTITY = {"test_top1": ("test top-1", "top-1 (%)"), "val_top1": ("val top-1", "top-1 (%)"),
            "train_top1": ("train top-1", "top-1 (%)"), "test_top5": ("test top-5", "top-5 (%)"),
            "train_loss": ("training loss (total)", "loss"), "lr": ("learning rate", "lr")}
LOG_RATIO = 10.0  # a loss panel whose series differ more than this in scale gets a log axis


def plot(report: Report, path: Path) -> Path:
    """Draw the report into `path` (PNG); returns the path."""
    if report.name not in PLOTTABLE:
        raise UserError(f"--plot: available for {', '.join(PLOTTABLE)}, not {report.name}")
    if report.long.empty:
        raise UserError(f"--plot: the {report.name} table is empty, nothing to draw")
    plt = _pyplot()
    order = [str(i) for i in report.wide.index]
    fig = {"diminishing": _diminishing, "curves": _curves, "delta": _delta}[report.name](
        plt, report.long, order)
    width_in = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(report.title, width=int(width_in * 14)), fontsize=8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise UserError(f"--plot {path}: cannot write: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path


def _grid(plt: Any, n: int, width: float = 5.0, height: float = 3.6) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend_below(fig: Any, handles: list[Any], labels: list[str]) -> None:
    """One legend for the figure, under the panels: it never covers data."""
    if handles:
        fig.legend(handles, labels, loc="outside lower center", fontsize=7,
                   ncol=max(1, min(4, len(labels))), frameon=False)


def _diminishing(plt: Any, long: pd.DataFrame, order: list[str]) -> Any:
    groups = list(long.groupby(["dataset", "student"], sort=False))
    fig, axes = _grid(plt, len(groups))
    legend: dict[str, Any] = {}
    for ax, ((dataset, student), grp) in zip(axes, groups, strict=True):
        ladder = grp[grp["teacher"].notna()].sort_values("teacher_top1")
        for label, rows in ladder.groupby("row", sort=False):
            rows = rows[rows["n"] > 0]
            line = ax.errorbar(rows["teacher_top1"], rows["mean"], yerr=rows["std"].fillna(0),
                               marker="o", capsize=3, label=label)
            legend.setdefault(label, line)
            pub = rows[rows["paper"].notna() & rows["paper_teacher_top1"].notna()]
            if len(pub):
                (p,) = ax.plot(pub["paper_teacher_top1"], pub["paper"], ls=":", marker="x",
                               color=line[0].get_color(), label=f"{label} (paper)")
                legend.setdefault(f"{label} (paper)", p)
        for r in grp[grp["teacher"].isna()].to_dict("records"):
            if r["n"]:
                h = ax.axhline(r["mean"], ls="--", color="grey", lw=1)
                legend.setdefault(f"{r['row']} alone", h)
        # teachers name the x ticks (below the axis, never over the error bars)
        xs = ladder.groupby("teacher", sort=False)["teacher_top1"].first().dropna()
        ax.set_xticks(list(xs.values))
        ax.set_xticklabels([f"{x:.1f}\n{t}" for t, x in xs.items()], fontsize=7,
                           rotation=30 if len(xs) > 4 else 0)
        ax.set_title(f"{dataset}: {student}", fontsize=9)
        ax.set_xlabel("teacher top-1 (%) and teacher")
        ax.set_ylabel("student top-1 (%)")
        ax.grid(alpha=0.3)
    _legend_below(fig, list(legend.values()), list(legend))
    return fig


def _curve_axis(ax: Any, q: str, sub: pd.DataFrame) -> None:
    title, ylabel = QUANTITY.get(q, (f"loss component: {q[5:]}", "loss")
                                 if q.startswith("loss.") else (q, q))
    lossy = q == "train_loss" or q.startswith("loss.")
    scale = sub.groupby(["series", "row"], sort=False)["mean"].median().abs()
    scale = scale[scale > 0]
    if lossy and (sub["mean"] > 0).all() and len(scale) > 1 and \
            scale.max() / scale.min() > LOG_RATIO:
        ax.set_yscale("log")  # one method's loss ~50 would flatten the others' ~1
        title += " (log scale)"
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)


def _curves(plt: Any, long: pd.DataFrame, order: list[str]) -> Any:
    comps = sorted(q for q in set(long["quantity"]) if q.startswith("loss."))
    panels = ["test_top1", "train_loss", *comps][:9]
    panels = [p for p in panels if p in set(long["quantity"])]
    fig, axes = _grid(plt, len(panels), width=4.5, height=3.2)
    keys = list(dict.fromkeys(zip(long["series"], long["row"], strict=True)))
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    color = {k: cmap(i % cmap.N) for i, k in enumerate(keys)}  # one colour per series
    legend: dict[str, Any] = {}
    for ax, q in zip(axes, panels, strict=True):
        sub = long[long["quantity"] == q]
        for (series, row), grp in sub.groupby(["series", "row"], sort=False):
            grp = grp.sort_values("epoch")
            std = grp["std"].fillna(0)
            c = color[(series, row)]
            (line,) = ax.plot(grp["epoch"], grp["mean"], color=c)
            legend.setdefault(f"{series} · {row}", line)
            ax.fill_between(grp["epoch"], grp["mean"] - std, grp["mean"] + std, alpha=0.15,
                            color=c)
        _curve_axis(ax, q, sub)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    keyed = {f"{s} · {r}": None for s, r in keys}  # legend in the table's series order
    handles = [legend[k] for k in keyed if k in legend]
    _legend_below(fig, handles, [k for k in keyed if k in legend])
    return fig


def _delta(plt: Any, long: pd.DataFrame, order: list[str]) -> Any:
    pair_names = list(dict.fromkeys(long["pair"]))
    present = list(dict.fromkeys(long["row"]))
    rows = [r for r in order if r in present] + [r for r in present if r not in order]
    fig, axes = _grid(plt, 1, width=max(5.0, 1.2 * len(pair_names) * max(1, len(rows)) / 3),
                      height=4.0)
    ax = axes[0]
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):  # bars and legend in the table's row order
        sub = long[long["row"] == row].set_index("pair").reindex(pair_names)
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(pair_names))]
        lo = (sub["mean"] - sub["lo"]).fillna(0).clip(lower=0)
        hi = (sub["hi"] - sub["mean"]).fillna(0).clip(lower=0)
        ax.bar(xs, sub["mean"].fillna(0), width, yerr=[lo, hi], capsize=2, label=row)
    ends = pd.concat([long["lo"], long["hi"], long["mean"]]).dropna()
    if len(ends):  # every interval whole: no error bar is clipped
        top, bottom = max(float(ends.max()), 0.0), min(float(ends.min()), 0.0)
        pad = 0.08 * ((top - bottom) or 1.0)
        ax.set_ylim(bottom - pad, top + pad)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(pair_names)))
    ax.set_xticklabels(pair_names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"top-1 gain over {long['baseline'].iloc[0]} (points, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    return fig
