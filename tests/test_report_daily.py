"""Reports in a researcher's daily loop (issue 14, part B): tables that fit a terminal,
cancelled jobs and value-matched baselines, `--out`/`--plot` paths, tidy CSV, and plots that
can be read (legend outside, log loss axis, whole error bars, teacher ticks, honest "best").
"""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from sqlalchemy import select

from kdrun import grid
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job, Result
from kdrun.errors import UserError
from kdrun.report import fit, formats, plot
from kdrun.report.filters import Filters
from kdrun.report.tables import Options, build
from tests.test_report_db import build_db, grid_dict, result_for, run_cli

# ------------------------------------------------------------------ the cifar grid, fitted


@pytest.fixture(scope="module")
def cifar_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """The shipped cifar grid enqueued, ~90% of its jobs finished with synthetic results
    (the rest still queued, so cells carry `(2/3: 1 queued)` labels, the widest kind)."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('cifar') / 'kdrun.db'}", create=True)
    migrate.upgrade(db)
    name, specs = grid.load("cifar")
    queue.enqueue(db, name, specs)
    rng = random.Random(0)
    with db.write() as s:
        for j in s.execute(select(Job)).scalars():
            if rng.random() < 0.1:
                continue
            top1 = 70.0 + len(j.student) % 7 + rng.random()
            s.add(Result(job_id=j.id, best_top1=top1, best_top5=top1 + 20, best_epoch=200,
                         last_top1=top1 - 0.2, last_top5=top1 + 19, last5_top1=top1 - 0.1,
                         selection_split="test", wall_time_s=1.0, images_per_s=1.0,
                         teacher_top1=75.0 if j.teacher else None))
            j.state = "succeeded"
    return db


def _render(renderable: Any, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_cifar_top1_fits_the_terminal_with_no_cell_cut(cifar_db: Database, width: int) -> None:
    rep = build("top1", cifar_db)
    assert len(rep.wide.columns) == 13
    text = _render(fit.tables(rep, width), width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    for col in rep.wide.columns:  # every pair's header: teacher over →student
        teacher, student = col.split("->")
        assert re.search(rf"\b{re.escape(teacher)}\b", text) and f"→{student}" in text
    for row, cells in rep.wide.iterrows():
        for cell in cells:  # every cell whole (a long one has its parenthesis below it)
            for part in str(cell).replace(" (", "\n(", 1).split("\n") if len(
                    str(cell)) > fit.LONG_CELL else [str(cell)]:
                assert part in text, (row, cell)
    tables = text.count("┏")
    assert tables == (5 if width == 80 else 3)
    # files keep the paper's layout: one table, every pair a column
    md = formats.render(rep, "markdown").splitlines()[2]
    assert all(c in md for c in rep.wide.columns)


def test_split_by_teacher_and_transpose(cifar_db: Database) -> None:
    rep = build("top1", cifar_db)
    text = _render(fit.tables(rep, 80, split="teacher"), 80)
    assert "teacher wrn_40_2" in text and "teacher ResNet50" in text
    assert "->" not in text and "…" not in text  # columns are the students alone
    text = _render(fit.tables(rep, 100, transpose=True), 100)
    assert "resnet32x4->resnet8x4" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    r = run_cli(cifar_db, "report", "--split", "family")
    assert r.exit_code == 2 and "--split 'family': valid choices are auto, teacher, student" \
        in r.output
    r = run_cli(cifar_db, "report", "--table", "delta", "--split", "student")
    assert r.exit_code == 0 and "student MobileNetV2" in r.output, r.output
    r = run_cli(cifar_db, "report", "--table", "diminishing", "--split", "teacher")
    assert r.exit_code == 2 and "no teacher->student pairs to split by" in r.output


# ---------------------------------------------------- cancelled jobs, labels and baselines


def _t(config: dict) -> float:
    return float(config["method"]["params"].get("T", 0))


@pytest.fixture(scope="module")
def swept_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """kd at T=4 (the default) and T=2, all finished."""
    g = grid_dict(methods=["vanilla", "kd", {"kd": {"T": 2}}], pairs=grid_dict()["pairs"][:1])
    return build_db(tmp_path_factory.mktemp("swept") / "kdrun.db", g)


def test_cancelled_jobs_leave_reports_and_labels(tmp_path: Path) -> None:
    """An old variant (T=2) cancelled before it ran: its rows and its T in every label go."""
    g = grid_dict(methods=["vanilla", "kd", {"kd": {"T": 2}}], pairs=grid_dict()["pairs"][:1])
    db = build_db(tmp_path / "kdrun.db", g,
                  plan=lambda c: "queued" if _t(c) == 2.0 else "succeeded")
    assert queue.cancel(db, Job.state == "queued") == 3
    rows = list(build("top1", db, opts=Options(paper=False)).wide.index)
    assert rows == ["teacher", "student", "kd"]
    rows = list(build("top1", db, Filters(include_cancelled=True), Options(paper=False))
                .wide.index)
    assert rows == ["teacher", "student", "kd(T=2.0)", "kd(T=4.0)"]
    assert build("delta", db).meta["baseline"] == "kd"  # `kd` names it again
    r = run_cli(db, "report", "--include-cancelled", "--no-paper")
    assert r.exit_code == 0 and "kd(T=2.0)" in r.output and "0/3: 3 cancelled" in r.output


def test_baseline_matched_by_values_and_swept_baseline(swept_db: Database) -> None:
    for spec in ("kd(T=4)", "kd(T=4.0)", "kd(T=4, ce_weight=0.1)"):
        r = build("delta", swept_db, opts=Options(baseline=spec))
        assert r.meta["baseline"] == "kd(T=4.0)"
        assert "kd(T=2.0)" in r.wide.index  # the other setting is a row against it
    with pytest.raises(UserError, match=r"--baseline 'kd' matches 2 settings: kd\(T=2.0\), "
                                        r"kd\(T=4.0\); name one, e\.g\. --baseline"):
        build("delta", swept_db)
    with pytest.raises(UserError, match=r"no 'kd\(T=3\)' jobs to compare with"):
        build("delta", swept_db, opts=Options(baseline="kd(T=3)"))
    r = run_cli(swept_db, "report", "--table", "delta", "--baseline", "kd(T=2)")
    assert r.exit_code == 0, r.output
    assert "top1 gain over kd(T=2.0)" in r.output


# --------------------------------------------------------------- output paths and formats


@pytest.fixture(scope="module")
def full_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    return build_db(tmp_path_factory.mktemp("report") / "kdrun.db")


def test_out_paths_formats_and_plot_dir(full_db: Database, tmp_path: Path) -> None:
    tex = tmp_path / "new" / "deeper" / "r.tex"  # a missing folder is created
    r = run_cli(full_db, "report", "--out", str(tex))
    assert r.exit_code == 0, r.output
    assert tex.read_text().startswith("% kdrun report") and r"\begin{tabular}" in tex.read_text()
    md = tmp_path / "r.md"
    assert run_cli(full_db, "report", "--out", str(md)).exit_code == 0
    assert md.read_text().startswith("**top1")
    r = run_cli(full_db, "report", "--out", str(tmp_path))
    assert r.exit_code == 2 and "is a folder; give a file name" in r.output
    r = run_cli(full_db, "report", "--out", str(md), "--format", "csv")
    assert r.exit_code == 2 and "a .md file holds markdown, not csv" in r.output
    r = run_cli(full_db, "report", "--table", "delta", "--plot", str(tmp_path / "plots"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plots" / "delta.png").is_file()
    assert f"wrote {tmp_path / 'plots' / 'delta.png'}" in r.output.replace("\n", "")


def test_export_refuses_a_file_for_csv_and_writes_tidy_numbers(full_db: Database,
                                                               tmp_path: Path) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    r = run_cli(full_db, "export", "--out", str(taken))
    assert r.exit_code == 2 and "csv export writes a folder" in r.output
    assert taken.read_text() == "mine" and "Traceback" not in r.output
    out = tmp_path / "exp"
    assert run_cli(full_db, "export", "--out", str(out)).exit_code == 0
    jobs = (out / "jobs.csv").read_text()
    assert "0.050000000000000003" not in jobs and ",0.05," in jobs
    df = pd.read_csv(out / "jobs.csv")
    assert df["created_at"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$").all()
    js = tmp_path / "e.json"  # the extension picks json; an existing json file is replaced
    js.write_text("old")
    assert run_cli(full_db, "export", "--out", str(js)).exit_code == 0
    assert json.loads(js.read_text())["jobs"][0]["created_at"].endswith("+00:00")


# -------------------------------------------------------------------------------- plots


def _mpl():
    return plot._pyplot()


def test_curves_legend_outside_log_loss_and_human_titles(full_db: Database) -> None:
    rep = build("curves", full_db)
    long = rep.long.copy()
    big = (long["row"] == "dist") & long["quantity"].isin(["loss.kd", "train_loss"])
    long.loc[big, "mean"] *= 50  # a DIST-like loss ~50 next to the others' ~1
    plt = _mpl()
    fig = plot._curves(plt, long, list(rep.wide.index))
    try:
        axes = [a for a in fig.axes if a.get_visible()]
        titles = {a.get_title(): a for a in axes}
        assert "test top-1" in titles and "loss component: ce" in titles
        assert titles["test top-1"].get_ylabel() == "top-1 (%)"
        assert titles["loss component: kd (log scale)"].get_yscale() == "log"
        assert titles["training loss (total) (log scale)"].get_yscale() == "log"
        assert titles["loss component: ce"].get_yscale() == "linear"
        assert all(a.get_legend() is None for a in axes) and len(fig.legends) == 1
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels[0] == "resnet8 · student"  # the table's order
    finally:
        plt.close(fig)


def test_delta_error_bars_whole_and_legend_in_table_order(full_db: Database) -> None:
    rep = build("delta", full_db)
    plt = _mpl()
    fig = plot._delta(plt, rep.long, list(rep.wide.index))
    try:
        lo, hi = fig.axes[0].get_ylim()
        assert lo <= rep.long["lo"].min() and hi >= rep.long["hi"].max()
        assert [t.get_text() for t in fig.legends[0].get_texts()] == list(rep.wide.index)
        assert fig.axes[0].get_legend() is None
    finally:
        plt.close(fig)


def test_diminishing_teachers_on_ticks_and_best_only_when_intervals_separate(
        tmp_path: Path) -> None:
    def results(c: dict) -> dict:
        res = result_for(c)
        t = (c.get("teacher") or {}).get("name")
        if t == "resnet20" and c["method"]["name"] == "dist":
            res["best_top1"] += 10 + 0.1 * c["seed"]  # a gain far beyond kd's interval
        return res

    db = build_db(tmp_path / "kdrun.db", results=results)
    rep = build("diminishing", db)
    assert any("dist best turns a stronger teacher into a stronger student" in n
               for n in rep.notes)
    assert rep.wide.loc["resnet8 · dist", "slope"].endswith("(best)")
    plt = _mpl()
    fig = plot._diminishing(plt, rep.long, list(rep.wide.index))
    try:
        ax = fig.axes[0]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == ["59.0\nresnet14", "65.5\nresnet20"]
        assert not ax.texts and ax.get_legend() is None  # nothing drawn over the data
    finally:
        plt.close(fig)
