"""Report formats: CSV/JSON parse back to the same numbers, LaTeX and Markdown keep a stable
structure, `--plot` writes a PNG (or says how to get matplotlib), and the CLI's errors."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdrun.db.engine import Database
from kdrun.errors import UserError
from kdrun.report import formats, plot
from kdrun.report.tables import TABLES, Options, build
from tests.test_report_db import build_db, run_cli


@pytest.fixture(scope="module")
def full_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """The complete results database of test_report_db (every job succeeded)."""
    return build_db(tmp_path_factory.mktemp("report") / "kdrun.db")


@pytest.mark.parametrize("name", TABLES)
def test_csv_parses_back_to_the_same_numbers(full_db: Database, name: str) -> None:
    r = build(name, full_db)
    back = pd.read_csv(io.StringIO(formats.csv(r)))
    assert list(back.columns) == list(r.long.columns)
    assert len(back) == len(r.long) > 0
    for col in ("mean", "std", "n", "lo", "hi", "slope", "gain", "teacher_top1"):
        if col in r.long.columns:
            pd.testing.assert_series_equal(back[col].astype(float), r.long[col].astype(float),
                                           check_exact=True, check_names=False)


def test_json_has_meta_notes_and_rows(full_db: Database) -> None:
    r = build("delta", full_db, opts=Options(metric="last"))
    doc = json.loads(formats.to_json(r))
    assert (doc["table"], doc["metric"], doc["baseline"]) == ("delta", "last", "kd")
    assert doc["notes"] == r.notes
    assert len(doc["rows"]) == len(r.long)
    row = next(x for x in doc["rows"] if x["row"] == "dist" and x["pair"] == "resnet14->resnet8")
    assert row["mean"] == pytest.approx(r.long.set_index(["row", "pair"]).loc[
        ("dist", "resnet14->resnet8"), "mean"])
    top1 = json.loads(formats.to_json(build("top1", full_db)))
    teacher = next(x for x in top1["rows"] if x["row"] == "teacher")
    assert teacher["std"] is None  # NaN becomes null, the document stays valid JSON


def test_latex_booktabs_structure_and_bold_best(full_db: Database) -> None:
    r = build("top1", full_db)
    tex = formats.render(r, "latex")
    lines = tex.splitlines()
    body = [ln for ln in lines if ln.strip().endswith(r"\\")]
    assert lines[0] == "% kdrun report: top1 (%), best epoch, mean ± std over seeds (n)"
    assert r"\caption{top1 (\%), best epoch, mean $\pm$ std over seeds (n)}" in tex
    assert r"\begin{tabular}{lrr}" in tex and r"\end{tabular}" in tex
    assert [ln.strip() for ln in lines if "rule" in ln] == [
        r"\toprule", r"\midrule", r"\midrule", r"\bottomrule"]
    assert all(ln.count("&") == 2 for ln in body)  # label + two pair columns on every row
    assert body[0].strip() == r"method & resnet14$\to$resnet8 & resnet20$\to$resnet8 \\"
    dist = next(ln for ln in body if ln.strip().startswith("dist &"))
    # dist is the best method in both columns; teacher and student rows are never bold
    assert dist.count(r"\textbf{") == 2
    assert r"\textbf{55.83 $\pm$ 1.76 (3)}" in dist
    assert not any(r"\textbf" in ln for ln in body if ln.strip().startswith(("teacher", "stud")))
    assert tex == formats.render(build("top1", full_db), "latex")  # stable


def test_latex_lower_is_better_for_kl(full_db: Database) -> None:
    tex = formats.render(build("agreement", full_db), "latex")
    kl_best = re.findall(r"\\textbf\{(0\.\d+) \$\\pm\$", tex)
    # KL means: resnet14 kd 0.200, dist 0.183; resnet20 kd 0.450, dist 0.300: lowest is bold
    assert "0.183" in kl_best and r"\textbf{0.450" not in tex
    assert r"KL(t$\|$s)" in tex


def test_markdown_table_and_notes(full_db: Database) -> None:
    md = formats.render(build("top1", full_db), "markdown")
    lines = md.splitlines()
    assert lines[0] == "**top1 (%), best epoch, mean ± std over seeds (n)**"
    assert lines[2] == "| method | resnet14->resnet8 | resnet20->resnet8 |"
    assert lines[3] == "|---|---:|---:|"
    assert "| kd | 54.33 ± 1.53 (3) | 54.67 ± 0.58 (3) |" in lines
    assert "- best epoch selected on the test split (15 jobs)" in lines


def test_terminal_text(full_db: Database) -> None:
    text = formats.render(build("diminishing", full_db), "table")
    assert "resnet8 · dist" in text and "+0.205 (largest)" in text


@pytest.mark.parametrize("name", plot.PLOTTABLE)
def test_plot_writes_a_png(full_db: Database, tmp_path: Path, name: str) -> None:
    out = plot.plot(build(name, full_db), tmp_path / f"{name}.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_without_matplotlib_says_how_to_install(full_db: Database, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UserError, match=r"pip install 'kdrun\[plot\]'"):
        plot.plot(build("delta", full_db), tmp_path / "x.png")


def test_cli_report_formats_and_plot(full_db: Database, tmp_path: Path) -> None:
    png = tmp_path / "dim.png"
    r = run_cli(full_db, "report", "--table", "diminishing", "--format", "csv",
                "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 0
    assert "slope" in r.output.splitlines()[1]  # the CSV header follows the "wrote" line
    out = tmp_path / "t.tex"
    r = run_cli(full_db, "report", "--table", "top1", "--format", "latex", "--out", str(out),
                "--metric", "last", "--pairs", "resnet14->resnet8", "--methods", "kd,dist")
    assert r.exit_code == 0, r.output
    assert r"\begin{tabular}{lr}" in out.read_text()
    assert "last epoch" in out.read_text()
    r = run_cli(full_db, "report", "--table", "agreement")
    assert r.exit_code == 0 and "Kendall" in r.output


@pytest.mark.parametrize("args, msg", [
    (["--table", "nope"], "valid tables are"),
    (["--format", "xls"], "valid formats are"),
    (["--metric", "worst"], "valid metrics are"),
    (["--table", "top1", "--plot", "x.png"], "--plot: available for"),
    (["--grid", "nope"], "--grid 'nope': no jobs"),
])
def test_cli_report_errors_are_one_line(full_db: Database, args: list[str], msg: str) -> None:
    r = run_cli(full_db, "report", *args)
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
