"""`kdrun report --format html` / `--all`: one self-contained web page to send a co-author.

Every table is built by the same code as the terminal, Markdown and CSV reports
(`tables.build_from`), and its cells are written exactly as Markdown writes them; the page
adds the protocol (dataset, recipe, seeds, methods), the provenance (devices, switches, kdrun
and torch versions, as the jobs recorded them), the plots as PNG data URIs, and a list of
jobs per table cell that each cell links to. Sortable columns are a few lines of inline
JavaScript; styles are inline too, with a print stylesheet: the file needs no network.
No torch here: the report reads the database only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import tempfile
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from kdrun import __version__
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.errors import UserError
from kdrun.report import metrics, switches
from kdrun.report import pairs as P
from kdrun.report.cells import number
from kdrun.report.choices import check_metric
from kdrun.report.filters import Filters
from kdrun.report.load import load_epochs, load_jobs
from kdrun.report.plot import PLOTTABLE, plot
from kdrun.report.table import Report, best_cells
from kdrun.report.tables import Options, build_from
from kdrun.trackers import store as tracker_store

RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
               "lr_milestones", "lr_gamma", "loader", "amp", "channels_last", "compile",
               "teacher_cache")
Cells = dict[tuple[str, str], list[str]]  # (wide row, wide column) -> job cell names


def render(db: Database, names: Iterable[str], filters: Filters | None = None,
           opts: Options | None = None) -> str:
    """The HTML page of the tables `names`, filtered and computed as `kdrun report` does."""
    opts = opts or Options()
    check_metric(opts.metric)
    jobs = (filters or Filters()).apply(load_jobs(db))
    epochs = load_epochs(db, list(jobs["job_id"]))
    built: list[tuple[str, Report | None, str | None]] = []
    for name in names:
        try:
            built.append((name, build_from(name, jobs, epochs, opts), None))
        except UserError as e:  # e.g. delta without its baseline: say so, show the rest
            built.append((name, None, str(e)))
    details = _details(db, jobs)
    page = Page(jobs, details)
    body = [page.header(db, filters, opts, [n for n, _, _ in built])]
    for name, rep, error in built:
        body.append(page.table_section(name, rep, error))
    body += [page.protocol(opts), page.provenance(), page.job_list()]
    return _document("kdrun report", "\n".join(body))


def _details(db: Database, jobs: pd.DataFrame) -> pd.DataFrame:
    """Per job: what the tables do not carry (config, run dir, provenance, error, trackers)."""
    ids = [int(i) for i in jobs["job_id"]]
    recs = []
    with db.read() as s:
        for i in range(0, len(ids), 500):
            for j in s.execute(select(Job).where(Job.id.in_(ids[i:i + 500]))).scalars():
                recs.append({"job_id": j.id, "config": j.config, "run_dir": j.run_dir,
                             "device_name": j.device_name, "kdrun_version": j.kdrun_version,
                             "torch_version": j.torch_version, "attempts": j.attempts,
                             "epoch": j.epoch, "error": j.error, "worker": j.worker,
                             "stored_label": getattr(j, "label", None)})
    df = pd.DataFrame(recs, columns=["job_id", "config", "run_dir", "device_name",
                                     "kdrun_version", "torch_version", "attempts", "epoch",
                                     "error", "worker", "stored_label"])
    runs = tracker_store.frame(db, ids)
    by_job = {jid: [_tracker_html(r) for r in g.to_dict("records")]
              for jid, g in runs.groupby("job_id")} if len(runs) else {}
    df["trackers"] = df["job_id"].map(lambda j: by_job.get(j, []))
    return df.set_index("job_id")


def _slug(text: str) -> str:
    return "c-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class Page:
    """The parts of the page; knows which jobs make each table cell."""

    def __init__(self, jobs: pd.DataFrame, details: pd.DataFrame) -> None:
        self.jobs, self.details = jobs, details
        self.multi = jobs["dataset"].nunique() > 1
        self.cell_of = switches.cell_names(jobs) if len(jobs) else pd.Series(dtype=object)
        self.cells = set(self.cell_of)
        self.linked: set[str] = set()

    # ---------------------------------------------------------------- cell -> jobs
    def key(self, dataset: str, teacher: Any, student: str, row: str) -> str:
        if row == P.TEACHER_ROW:
            name = f"{P.TEACHER_ROW} {teacher}"
        elif _missing(teacher) or row.startswith(P.STUDENT_ROW):
            name = f"{row} {student}"
        else:
            name = f"{row} {P.name(teacher, student)}"
        return f"{dataset}:{name}" if self.multi else name

    def cell_map(self, rep: Report) -> Cells:
        out: Cells = {}
        long = rep.long
        recs = long.to_dict("records")

        def add(row: str, col: str, *names: str) -> None:
            out.setdefault((row, col), []).extend(n for n in names if n in self.cells)

        if rep.name in ("top1", "top5"):
            for r in recs:
                k = self.key(r["dataset"], r["teacher"], r["student"], r["row"])
                add(r["row"], r["pair"], k)
                add(r["row"] + " (paper)", r["pair"], k)
        elif rep.name == "delta":
            for r in recs:
                add(r["row"], r["pair"], self.key(r["dataset"], r["teacher"], r["student"],
                                                  r["row"]),
                    self.key(r["dataset"], r["teacher"], r["student"], r["baseline"]))
        elif rep.name == "agreement":
            for r in recs:
                for col in rep.wide.columns:
                    add(f"{r['pair']} · {r['row']}", col,
                        self.key(r["dataset"], r["teacher"], r["student"], r["row"]))
        elif rep.name == "diminishing":
            self._diminishing(long, add)
        elif rep.name == "curves":
            prefixes = {f"{r['series']} · {r['row']}":
                        self.key(r["dataset"], r["teacher"], r["student"], r["row"])
                        for r in recs}
            for idx in rep.wide.index:
                for prefix, k in prefixes.items():
                    if idx.startswith(prefix + " ·") or idx.startswith(prefix + " ("):
                        for col in rep.wide.columns:
                            add(idx, col, k)
                        break
        return out

    def _diminishing(self, long: pd.DataFrame, add: Any) -> None:
        multi = long["dataset"].nunique() > 1
        ladder = long[long["teacher"].notna()]
        x = ladder.groupby(["dataset", "teacher"])["teacher_top1"].mean()
        col = {k: (f"{k[0]}:{k[1]} ({number(v, 1)})" if multi else f"{k[1]} ({number(v, 1)})")
               for k, v in x.items()}
        for r in ladder.to_dict("records"):
            who = f"{r['dataset']}:{r['student']}" if multi else r["student"]
            c = col.get((r["dataset"], r["teacher"]))
            k = self.key(r["dataset"], r["teacher"], r["student"], r["row"])
            for row in (f"{who} · {r['row']}", f"{who} · {r['row']} (paper)"):
                if c:
                    add(row, c, k)
                add(row, "slope", k)
                add(row, "gain", k)
            if c:
                add(f"{who} · teacher", c, self.key(r["dataset"], r["teacher"], r["student"],
                                                    P.TEACHER_ROW))

    # ---------------------------------------------------------------- sections
    def header(self, db: Database, filters: Filters | None, opts: Options,
               names: list[str]) -> str:
        f = filters or Filters()
        shown = [f"{k} {v}" for k, v in (("dataset", f.dataset), ("grid", f.grid),
                                         ("pairs", ", ".join(f.pairs)),
                                         ("methods", ", ".join(f.methods))) if v]
        counts = self.jobs["state"].value_counts()
        states = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no jobs"
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        toc = "".join(f'<li><a href="#t-{n}">{n}</a></li>' for n in names)
        toc += ('<li><a href="#protocol">protocol</a></li><li><a href="#provenance">'
                'provenance</a></li><li><a href="#jobs">jobs</a></li>')
        return (f"<header><h1>kdrun report</h1><p class=meta>{escape(db.display_url)} · "
                f"{len(self.jobs)} jobs ({escape(states)}) · "
                f"{escape(metrics.DESCRIBE[opts.metric])}"
                f"{' · ' + escape('; '.join(shown)) if shown else ''} · generated {now} by "
                f"kdrun {__version__}</p><nav><ul>{toc}</ul></nav></header>")

    def table_section(self, name: str, rep: Report | None, error: str | None) -> str:
        out = [f'<section id="t-{name}" class=table><h2>{escape(name)}</h2>']
        if rep is None:
            out.append(f"<p class=note>{escape(error or '')}</p></section>")
            return "".join(out)
        out.append(f"<p class=title>{escape(rep.title)}</p>")
        if rep.empty:
            out.append("<p class=note>(nothing to show yet)</p>")
        else:
            out.append(self.table(rep))
        if rep.notes:
            out.append("<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in rep.notes)
                       + "</ul>")
        if name in PLOTTABLE and not rep.empty:
            out.append(_plot(rep))
        out.append("</section>")
        return "".join(out)

    def table(self, rep: Report) -> str:
        wide = rep.wide
        cells = self.cell_map(rep)
        best = best_cells(rep)
        rules = set(rep.rules_after)
        head = "".join(f"<th>{escape(str(c))}</th>" for c in
                       [wide.index.name or "", *map(str, wide.columns)])
        rows = []
        for idx, row in wide.iterrows():
            tds = [f"<th scope=row>{escape(str(idx))}</th>"]
            for col, val in row.items():
                text = str(val)
                names = cells.get((str(idx), str(col)), [])
                content = escape(text)
                if names and text not in ("", "-"):
                    self.linked.update(names)
                    title = escape("jobs: " + "; ".join(dict.fromkeys(names)))
                    content = f'<a href="#{_slug(names[0])}" title="{title}">{content}</a>'
                cls = ' class="best"' if (idx, col) in best else ""
                sv = _sort_value(rep, idx, col)
                tds.append(f'<td{cls} data-v="{sv}">{content}</td>')
            cls = ' class="rule"' if idx in rules else ""
            rows.append(f"<tr{cls}>{''.join(tds)}</tr>")
        return (f'<div class=scroll><table class=sortable><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table></div>")

    def protocol(self, opts: Options) -> str:
        d = self.details
        configs = [c for c in d["config"]] if len(d) else []
        rows = []
        datasets = {json.dumps(c["dataset"], sort_keys=True): c["dataset"] for c in configs}
        for ds in datasets.values():
            extra = ", ".join(f"{k} {v}" for k, v in ds.items() if k != "name")
            rows.append(("dataset", f"{ds['name']}" + (f" ({extra})" if extra else "")))
        for key in RECIPE_KEYS:
            vals = list(dict.fromkeys(_text(c["recipe"].get(key)) for c in configs
                                      if key in c["recipe"]))
            if vals:
                rows.append((f"recipe.{key}", ", ".join(vals)))
        seeds = sorted({c["seed"] for c in configs})
        rows.append(("seeds", ", ".join(map(str, seeds)) or "–"))
        students = self.jobs[self.jobs["kind"] == "student"]
        params = {}
        for label, p in zip(students["label"], students["params"], strict=True):
            params.setdefault(label, set()).add(json.dumps(p, sort_keys=True))
        for label in P.order(list(params)):
            rows.append((f"method {label}", "; ".join(sorted(params[label]))))
        done = self.jobs[(self.jobs["state"] == "succeeded") & (self.jobs["kind"] == "student")]
        rows.append(("metric", f"{metrics.DESCRIBE[opts.metric]}; "
                               f"{metrics.selection_note(done, opts.metric)}"))
        return _kv_section("protocol", "protocol", rows)

    def provenance(self) -> str:
        d = self.details
        ran = d[d["device_name"].notna()] if len(d) else d
        rows = []
        for col, what in (("device_name", "devices"), ("kdrun_version", "kdrun"),
                          ("torch_version", "torch")):
            counts = ran[col].value_counts() if len(ran) else pd.Series(dtype=int)
            rows.append((what, "; ".join(f"{v} ({n} job{'' if n == 1 else 's'})"
                                         for v, n in counts.items()) or "–"))
        finished = self.jobs[self.jobs["state"] == "succeeded"]
        rows.append(("switches", "; ".join(switches.note(finished)) or "not recorded"))
        workers = sorted({w.rsplit(":", 2)[0] for w in d["worker"].dropna()}) if len(d) else []
        rows.append(("machines", ", ".join(workers) or "–"))
        tracked = int((d["trackers"].map(len) > 0).sum()) if len(d) else 0
        rows.append(("trackers", f"{tracked} job(s) logged to TensorBoard / W&B "
                                 "(see the job list)" if tracked else "none"))
        return _kv_section("provenance", "provenance", rows)

    def job_list(self) -> str:
        if self.jobs.empty:
            return '<section id="jobs"><h2>jobs</h2><p class=note>no jobs</p></section>'
        out = ['<section id="jobs"><h2>jobs</h2><p class=note>the jobs of each table cell; '
               "each cell of the tables above links here</p>"]
        order = list(dict.fromkeys(self.cell_of.sort_index()))
        head = ("<tr><th>job</th><th>label</th><th>seed</th><th>state</th><th>best top1</th>"
                "<th>last top1</th><th>epochs</th><th>computed as</th><th>run dir</th>"
                "<th>trackers</th><th>error</th></tr>")
        for name in order:
            members = self.jobs[self.cell_of == name].sort_values(["seed", "job_id"])
            rows = [self._job_row(r) for r in members.to_dict("records")]
            out.append(f'<div class=cell id="{_slug(name)}"><h3>{escape(name)}</h3>'
                       f'<div class=scroll><table class="jobs sortable"><thead>{head}</thead>'
                       f"<tbody>{''.join(rows)}</tbody></table></div></div>")
        out.append("</section>")
        return "".join(out)

    def _job_row(self, r: dict[str, Any]) -> str:
        from kdrun.labels import job_label

        det = self.details.loc[r["job_id"]] if r["job_id"] in self.details.index else None

        def get(key: str) -> Any:  # a job not started yet has no device, run dir, ...
            v = det[key] if det is not None else None
            return None if _missing(v) else v

        cfg = get("config")
        label = get("stored_label") or (job_label(cfg) if cfg else r["label"])
        epochs = cfg["recipe"].get("epochs") if cfg else None
        done = get("epoch")
        error = (get("error") or "").strip()
        how = switches.compute_label(r.get("switches"))  # device, arithmetic, compile
        how = get("device_name") or "–" if how == switches.UNRECORDED else how
        trackers = "<br>".join(get("trackers") or [])
        cells = [str(r["job_id"]), escape(str(label)), str(r["seed"]), escape(r["state"]),
                 number(r["best_top1"]), number(r["last_top1"]),
                 f"{int(done) if done is not None else '–'}/{epochs or '–'}", escape(how),
                 escape(str(get("run_dir") or "")), trackers,
                 escape(error.splitlines()[0] if error else "")]
        return (f'<tr id="job-{r["job_id"]}">' + "".join(f"<td>{c}</td>" for c in cells)
                + "</tr>")


def _tracker_html(rec: dict[str, Any]) -> str:
    """`wandb kdrun/3x9k2` (a link when W&B has a URL) / `tensorboard <run dir>/tensorboard`."""
    rec = {k: v for k, v in rec.items() if not _missing(v)}
    if rec["tracker"] == "tensorboard":  # its log dir: `tensorboard` under the run dir
        return f'<span title="{escape(rec["run_id"])}">tensorboard</span>'
    project = f"{rec['project']}/" if rec.get("project") else ""
    text = escape(f"{rec['tracker']} {project}{rec['run_id']}")
    url = str(rec.get("url") or "")
    return f'<a href="{escape(url)}">{text}</a>' if url.startswith("https://") else text


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _sort_value(rep: Report, idx: Any, col: Any) -> str:
    """The number a column sorts by: the table's score where it has one, else the cell's
    leading number (the JavaScript falls back to text)."""
    if rep.score is not None and idx in rep.score.index and col in rep.score.columns:
        v = rep.score.at[idx, col]
        if not _missing(v):
            return f"{float(v):.17g}"
    return ""


def _kv_section(anchor: str, title: str, rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th scope=row>{escape(k)}</th><td>{escape(v)}</td></tr>"
                   for k, v in rows)
    return (f'<section id="{anchor}"><h2>{title}</h2><div class=scroll><table class=kv>'
            f"<tbody>{body}</tbody></table></div></section>")


def _plot(rep: Report) -> str:
    """The report's plot as an inline PNG (or a line saying why there is none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = plot(rep, Path(tmp) / f"{rep.name}.png")
        except UserError as e:
            return f"<p class=note>no plot: {escape(str(e))}</p>"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{escape(rep.name)} plot" src="data:image/png;base64,{data}">'
            f"</figure>")


CSS = """
:root{--fg:#1b1f24;--muted:#59636e;--line:#d0d7de;--bg:#fff;--head:#f6f8fa;--best:#0b6b2b}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0 auto;padding:16px 20px 40px;max-width:1280px}
h1{font-size:22px;margin:4px 0}h2{font-size:18px;margin:28px 0 4px;border-bottom:1px solid
var(--line);padding-bottom:2px}h3{font-size:14px;margin:16px 0 4px}
.meta,.note,.title{color:var(--muted);margin:4px 0}.title{font-weight:600;color:var(--fg)}
nav ul{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:4px 14px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:right;white-space:nowrap;
vertical-align:top}
thead th{background:var(--head);position:sticky;top:0;cursor:pointer;user-select:none}
thead th.asc:after{content:" \\25B2";font-size:9px}thead th.desc:after{content:" \\25BC";
font-size:9px}
tbody th,table.kv td,table.jobs td{text-align:left}table.kv td{white-space:normal}
tbody th{font-weight:600;background:#fbfcfd}
tr.rule>*{border-bottom:2px solid #8c959f}
td.best{font-weight:700;color:var(--best)}
a{color:#0550ae;text-decoration:none}a:hover{text-decoration:underline}
td a{color:inherit;text-decoration:underline dotted #8c959f}
table.jobs{width:100%}table.jobs th{text-align:left}
table.jobs td:nth-child(2),table.jobs td:nth-child(n+9){white-space:normal;
overflow-wrap:anywhere}
ul.notes{color:var(--muted);margin:4px 0 0;padding-left:18px;font-size:13px}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
.cell:target,.cell:target h3{background:#fff8c5}
@media print{body{max-width:none;padding:0;font-size:10pt}nav{display:none}
a{color:inherit}.scroll{overflow:visible}thead th{position:static}
th,td{padding:1px 4px;font-size:8.5pt}section.table{break-inside:avoid-page}
figure img{max-width:100%;break-inside:avoid}tr{break-inside:avoid}
h2{break-after:avoid}}
"""

JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  var ths=t.tHead.rows[0].cells;
  Array.prototype.forEach.call(ths,function(th,i){th.addEventListener('click',function(){
    var asc=!th.classList.contains('asc');
    Array.prototype.forEach.call(ths,function(h){h.classList.remove('asc','desc')});
    th.classList.add(asc?'asc':'desc');
    var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    function key(r){var c=r.cells[i];if(!c)return [2,''];
      var v=c.getAttribute('data-v');var n=v?parseFloat(v):parseFloat(
        c.textContent.replace(/^[^0-9+\\-.]*/,''));
      return isNaN(n)?[1,c.textContent.trim().toLowerCase()]:[0,n]}
    rows.sort(function(a,b){var x=key(a),y=key(b);
      if(x[0]!==y[0])return x[0]-y[0];var d=x[1]<y[1]?-1:x[1]>y[1]?1:0;return asc?d:-d});
    rows.forEach(function(r){r.classList.remove('rule');body.appendChild(r)});
  })});
});
"""


def _document(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n"
            f"<script>{JS}</script></body></html>\n")
