"""The HTML report and the pandas API read the same tables as the other report formats:
every cell as Markdown prints it, every plot inline, links that land on job details, no
network needed; `kdrun.api.table` is what `--format csv` writes."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import kdrun.api
from kdrun.report import formats, html
from kdrun.report.tables import TABLES, build
from tests.test_report_db import build_db, run_cli


class Page(HTMLParser):
    """Collects what a reader sees: cell texts, note lines, images, link targets, ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[str] = []
        self.items: list[str] = []
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.external: list[str] = []
        self._text: list[str] | None = None
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if (a.get("src") or "").startswith(("http:", "https:", "//")):
            self.external.append(a["src"])  # links out are fine; resources must be inline
        if tag == "link":
            self.external.append(str(a))
        if tag in ("td", "th", "li"):
            self._text, self._stack = [], [*self._stack, tag]

    def handle_endtag(self, tag):
        if tag in ("td", "th", "li") and self._text is not None:
            text = "".join(self._text).strip()
            (self.items if tag == "li" else self.cells).append(text)
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    d = build_db(tmp_path_factory.mktemp("html") / "kdrun.db")
    yield d
    d.dispose()


@pytest.fixture(scope="module")
def page(db, tmp_path_factory) -> tuple[Page, str]:
    out = tmp_path_factory.mktemp("out") / "report.html"
    r = run_cli(db, "report", "--all", "--out", str(out))
    assert r.exit_code == 0, r.output
    text = out.read_text()
    p = Page()
    p.feed(text)
    p.close()
    return p, text


def _markdown_cells(md: str) -> list[str]:
    """Every cell of a Markdown table, as the Markdown report prints it (unescaped)."""
    out = []
    for line in md.splitlines():
        if line.startswith("| "):
            out += [c.strip().replace("\\|", "|") for c in line.strip()[2:-2].split(" | ")]
    return out


def test_html_report_shows_every_table_as_markdown_prints_it(db, page):
    p, _ = page
    cells = set(p.cells)
    for name in TABLES:
        rep = build(name, db)
        assert not rep.empty, name
        md_cells = _markdown_cells(formats.markdown(rep))
        assert len(md_cells) > 4
        missing = [c for c in md_cells if c not in cells]
        assert not missing, (name, missing[:5])
        assert set(rep.notes) <= set(p.items), name
        assert f"t-{name}" in p.ids
    # spot checks, by hand from tests/test_report_db.py's literal values
    assert "55.83 ± 1.76 (3)" in cells and "+1.50 [+0.26, +2.74] (3) *" in cells


def test_html_report_is_self_contained_with_plots_and_links_to_jobs(page):
    p, text = page
    assert text.startswith("<!DOCTYPE html>") and "<script>" in text and "@media print" in text
    assert not p.external  # no network: styles, script and images are inline
    assert len(p.imgs) == 3  # delta, diminishing, curves
    for src in p.imgs:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    anchors = [h[1:] for h in p.hrefs if h.startswith("#")]
    assert anchors and set(anchors) <= p.ids  # every link lands somewhere in the file
    cell_links = [a for a in anchors if a.startswith("c-")]
    assert len(set(cell_links)) == 2 + 1 + 4  # two teachers, the student, 2 methods x 2 pairs
    for words in ("protocol", "provenance", "jobs"):
        assert words in p.ids
    assert "resnet14->resnet8 kd s2" in p.cells  # the job list names each job by its label
    assert "seeds" in p.cells and "0, 1, 2" in p.cells


def test_report_html_cli_options(db, tmp_path):
    r = run_cli(db, "report", "--table", "top1", "--format", "html")
    assert r.exit_code == 0 and r.output.lstrip().startswith("<!DOCTYPE html>")
    assert 'id="t-top1"' in r.output and 'id="t-delta"' not in r.output
    r = run_cli(db, "report", "--all", "--format", "markdown")
    assert r.exit_code == 0 and all(f"## {n}\n" in r.output for n in TABLES)
    assert "| dist | 55.83 ± 1.76 (3) | 57.17 ± 1.26 (3) |" in r.output
    r = run_cli(db, "report", "--all", "--format", "csv")
    assert r.exit_code == 2 and "--all writes html or markdown" in r.output
    r = run_cli(db, "report", "--all", "--baseline", "nope", "--out", str(tmp_path / "r.html"))
    assert r.exit_code == 0  # a table that cannot be built says why; the others are there
    text = (tmp_path / "r.html").read_text()
    assert "no &#x27;nope&#x27; jobs to compare with" in text and "55.83 ± 1.76 (3)" in text


def test_api_table_equals_the_report_csv_and_frames_are_the_export(db, tmp_path):
    url = db.url.render_as_string(hide_password=False)
    runs = kdrun.api.open(url)
    for name, args in (("top1", ()), ("delta", ("--metric", "last"))):
        r = run_cli(db, "report", "--table", name, "--format", "csv", *args)
        assert r.exit_code == 0, r.output
        kwargs = {"metric": "last"} if args else {}
        mine = runs.table(name, **kwargs)
        assert r.output.splitlines()[0] == ",".join(mine.columns)
        pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(r.output)),
                                      pd.read_csv(io.StringIO(mine.to_csv(index=False))))
        assert len(mine) == len(r.output.splitlines()) - 1
    wide = runs.table("top1", wide=True)
    assert wide.loc["dist", "resnet14->resnet8"] == "55.83 ± 1.76 (3)"
    jobs, results, epochs = runs.jobs(), runs.results(), runs.epochs()
    assert (len(jobs), len(results), len(epochs)) == (17, 17, 51)
    assert {"job_id", "label", "state", "recipe.lr", "params.T", "device_name"} <= set(jobs)
    assert {"job_id", "best_top1", "last5_top1", "agree_top1"} <= set(results)
    assert {"job_id", "epoch", "test_top1", "train_loss", "loss.ce", "loss.kd"} <= set(epochs)
    r = run_cli(db, "export", "--format", "csv", "--out", str(tmp_path / "x"))
    assert r.exit_code == 0
    exported = pd.read_csv(tmp_path / "x" / "results.csv")
    assert exported["best_top1"].tolist() == results["best_top1"].tolist()
    assert runs.html(tmp_path / "api.html").read_text().count("data:image/png;base64,") == 3
    assert runs.tracker_runs().empty and list(runs.epochs(grid="rep")["job_id"]) == list(
        epochs["job_id"])


def test_report_and_api_do_not_import_torch():
    code = ("import sys, kdrun.api, kdrun.report.html; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_html_report_of_unfinished_and_failed_jobs(tmp_path):
    def plan(config):
        if config["seed"] != 2:
            return "succeeded"
        return {"kd": "running", "dist": "failed"}.get(config["method"]["name"], "succeeded")

    db = build_db(tmp_path / "kdrun.db", plan=plan)
    try:
        p = Page()
        p.feed(html.render(db, ("top1", "agreement")))
        md_cells = _markdown_cells(formats.markdown(build("top1", db)))
        assert set(md_cells) <= set(p.cells)
        assert any("(2/3: 1 failed)" in c for c in md_cells)
        assert any("(2/3: 1 running)" in c for c in md_cells)
        for words in ("running", "failed", "RuntimeError: planned failure", "0/3"):
            assert words in p.cells, words
    finally:
        db.dispose()
