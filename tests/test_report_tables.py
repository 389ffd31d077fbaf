"""Every report table's numbers against values computed by hand from test_report_db's tables.

Hand computations are written out: mean, sample std (n-1), n, and the paired t interval with
the textbook quantile t(0.975, 2) = 4.302652729911275 (4.303 in printed tables).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kdrun.db.engine import Database
from kdrun.errors import UserError
from kdrun.report.filters import Filters
from kdrun.report.tables import Options, build
from tests.test_report_db import build_db, grid_dict, result_for


@pytest.fixture(scope="module")
def full_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """The complete results database of test_report_db (every job succeeded)."""
    return build_db(tmp_path_factory.mktemp("report") / "kdrun.db")

T975_2 = 4.302652729911275
T975_1 = 12.706204736174707


def cell(report, row: str, pair: str, **where) -> dict:
    long = report.long
    sel = long[(long["row"] == row) & (long["pair"] == pair)]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (row, pair, where, long)
    return sel.iloc[0].to_dict()


def approx(c: dict, mean: float, std: float, n: int) -> None:
    assert c["mean"] == pytest.approx(mean, abs=1e-9)
    if math.isnan(std):
        assert math.isnan(c["std"])
    else:
        assert c["std"] == pytest.approx(std, abs=1e-9)
    assert c["n"] == n


# -------------------------------------------------------------------------------- top1/top5


def test_top1_best_by_hand(full_db: Database) -> None:
    r = build("top1", full_db)
    p14, p20 = "resnet14->resnet8", "resnet20->resnet8"
    approx(cell(r, "teacher", p14), 60.0, math.nan, 1)
    approx(cell(r, "teacher", p20), 66.0, math.nan, 1)
    # student alone: 50, 52, 51 -> mean 51, deviations -1, 1, 0 -> var 2/2 = 1
    approx(cell(r, "student", p14), 51.0, 1.0, 3)
    # kd: 53, 54, 56 -> mean 163/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9, / 2
    approx(cell(r, "kd", p14), 163 / 3, math.sqrt(42 / 9 / 2), 3)
    # dist: 54, 56, 57.5 -> mean 167.5/3; squared deviations (11/6)^2 + (1/6)^2 + (10/6)^2
    approx(cell(r, "dist", p14), 167.5 / 3, math.sqrt((121 + 1 + 100) / 36 / 2), 3)
    approx(cell(r, "kd", p20), 164 / 3, math.sqrt((4 + 1 + 1) / 9 / 2), 3)
    assert r.wide.loc["kd", p14] == "54.33 ± 1.53 (3)"
    assert r.wide.loc["teacher", p14] == "60.00 ± – (1)"
    assert list(r.wide.index) == ["teacher", "student", "kd", "dist"]
    assert r.title.startswith("top1 (%), best epoch")
    assert "best epoch selected on the test split (15 jobs)" in r.notes


def test_metric_switch_last_and_last5(full_db: Database) -> None:
    last = build("top1", full_db, opts=Options(metric="last"))
    # last = best - 1 - 0.5*seed: kd 52, 52.5, 54 -> mean 52.8333; sq. dev 25/36+4/36+49/36
    approx(cell(last, "kd", "resnet14->resnet8"), 158.5 / 3, math.sqrt(78 / 36 / 2), 3)
    approx(cell(last, "teacher", "resnet14->resnet8"), 59.0, math.nan, 1)
    # student alone 49, 50.5, 49 -> 49.5, sq. dev .25 + 1 + .25
    approx(cell(last, "student", "resnet14->resnet8"), 49.5, math.sqrt(1.5 / 2), 3)
    assert last.title.startswith("top1 (%), last epoch")
    assert "last epoch: no model selection" in last.notes
    last5 = build("top1", full_db, opts=Options(metric="last5"))
    approx(cell(last5, "kd", "resnet14->resnet8"), 163 / 3 - 0.25, math.sqrt(42 / 9 / 2), 3)
    assert "mean of the last five epochs" in last5.title


def test_top5_best_and_last5_from_epochs(full_db: Database) -> None:
    best = build("top5", full_db)
    approx(cell(best, "kd", "resnet14->resnet8"), 163 / 3 + 30, math.sqrt(42 / 9 / 2), 3)
    # last5 top-5 comes from the per-epoch metrics: mean of 30+s, 40+s, 50+s = 40 + seed
    last5 = build("top5", full_db, opts=Options(metric="last5"))
    approx(cell(last5, "kd", "resnet20->resnet8"), 41.0, 1.0, 3)
    approx(cell(last5, "teacher", "resnet20->resnet8"), 40.0, math.nan, 1)


def test_split_flag_shows_the_selection_split(full_db: Database) -> None:
    r = build("top1", full_db, opts=Options(show_split=True))
    assert r.wide.loc["kd", "resnet14->resnet8"] == "54.33 ± 1.53 (3) [test]"
    assert (r.long["selection_split"].loc[r.long["n"] > 0] == "test").all()


def _incomplete(config: dict) -> str:
    t = (config.get("teacher") or {}).get("name")
    key = (t, config["method"]["name"], config["seed"])
    return {("resnet14", "dist", 1): "running", ("resnet14", "dist", 2): "failed",
            ("resnet20", "kd", 2): "queued"}.get(key, "succeeded")


@pytest.fixture(scope="module")
def partial_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    return build_db(tmp_path_factory.mktemp("partial") / "kdrun.db", plan=_incomplete)


def test_incomplete_cells_say_what_is_missing(partial_db: Database) -> None:
    r = build("top1", partial_db)
    c = cell(r, "dist", "resnet14->resnet8")
    assert (c["n"], c["total"], c["running"], c["failed"], c["queued"]) == (1, 3, 1, 1, 0)
    assert r.wide.loc["dist", "resnet14->resnet8"] == "54.00 ± – (1/3: 1 running, 1 failed)"
    assert r.wide.loc["kd", "resnet20->resnet8"] == "54.50 ± 0.71 (2/3: 1 queued)"
    assert r.wide.loc["kd", "resnet14->resnet8"] == "54.33 ± 1.53 (3)"  # complete: plain n
    assert any("2 cell(s) incomplete" in n for n in r.notes)


# ------------------------------------------------------------------------------------ delta


def test_delta_paired_ci_by_hand(full_db: Database) -> None:
    r = build("delta", full_db)
    # resnet14: dist - kd per seed = 1, 2, 1.5 -> mean 1.5, sd 0.5; half = t * 0.5 / sqrt(3)
    c = cell(r, "dist", "resnet14->resnet8")
    half = T975_2 * 0.5 / math.sqrt(3)
    approx(c, 1.5, 0.5, 3)
    assert (c["lo"], c["hi"]) == (pytest.approx(1.5 - half), pytest.approx(1.5 + half))
    assert c["significant"]  # [0.258, 2.742] excludes 0
    assert r.wide.loc["dist", "resnet14->resnet8"] == "+1.50 [+0.26, +2.74] (3) *"
    # resnet20: 3, 1, 3.5 -> mean 2.5, sq. dev .25 + 2.25 + 1 -> sd sqrt(1.75)
    c = cell(r, "dist", "resnet20->resnet8")
    sd = math.sqrt(1.75)
    approx(c, 2.5, sd, 3)
    assert c["lo"] == pytest.approx(2.5 - T975_2 * sd / math.sqrt(3))
    assert not c["significant"]  # [-0.79, 5.79] contains 0
    assert not r.wide.loc["dist", "resnet20->resnet8"].endswith("*")
    # the student alone vs kd: 50-53, 52-54, 51-56 = -3, -2, -5
    c = cell(r, "student", "resnet14->resnet8")
    approx(c, -10 / 3, math.sqrt(42 / 9 / 2), 3)
    half = T975_2 * math.sqrt(42 / 9 / 2) / math.sqrt(3)  # 3.79: [-7.13, +0.46] contains 0
    assert c["hi"] == pytest.approx(-10 / 3 + half) and not c["significant"]
    assert "kd" not in set(r.long["row"])


def test_delta_incomplete_pairs_only_matching_seeds(partial_db: Database) -> None:
    r = build("delta", partial_db)
    c = cell(r, "dist", "resnet14->resnet8")  # only seed 0 finished on both sides
    assert (c["n"], c["running"], c["failed"], c["seeds"]) == (1, 1, 1, "0")
    assert math.isnan(c["lo"]) and not c["significant"]
    assert r.wide.loc["dist", "resnet14->resnet8"] == "+1.00 [–] (1/3: 1 running, 1 failed)"
    c = cell(r, "dist", "resnet20->resnet8")  # kd seed 2 queued: seeds 0, 1 -> 3, 1
    approx(c, 2.0, math.sqrt(2), 2)
    assert c["hi"] == pytest.approx(2.0 + T975_1 * math.sqrt(2) / math.sqrt(2))
    assert c["queued"] == 1


def test_delta_needs_its_baseline(full_db: Database) -> None:
    with pytest.raises(UserError, match="--baseline"):
        build("delta", full_db, opts=Options(baseline="dkd"))
    r = build("delta", full_db, opts=Options(baseline="dist"))
    c = cell(r, "kd", "resnet14->resnet8")
    approx(c, -1.5, 0.5, 3)


# ------------------------------------------------------------------------------ diminishing


def test_diminishing_slope_gain_and_best_method(full_db: Database) -> None:
    r = build("diminishing", full_db)
    long = r.long
    ladder = long[long["teacher"].notna()]
    # teacher top-1 as the students measured it: 59.0 (resnet14), 65.5 (resnet20)
    assert dict(zip(ladder["teacher"], ladder["teacher_top1"], strict=True)) == {
        "resnet14": 59.0, "resnet20": 65.5}
    kd = ladder[ladder["row"] == "kd"].set_index("teacher")
    dist = ladder[ladder["row"] == "dist"].set_index("teacher")
    # two points: slope = (mean at 65.5 - mean at 59) / 6.5
    assert kd["slope"].iloc[0] == pytest.approx((164 / 3 - 163 / 3) / 6.5)
    assert dist["slope"].iloc[0] == pytest.approx((171.5 / 3 - 167.5 / 3) / 6.5)
    # gain paired by seed, strongest - weakest: kd 1, 1, -1; dist 3, 0, 1
    assert kd["gain"].iloc[0] == pytest.approx(1 / 3)
    assert dist["gain"].iloc[0] == pytest.approx(4 / 3)
    half = T975_2 * math.sqrt(7 / 3) / math.sqrt(3)  # dist: sq. dev 25/9+16/9+1/9 = 42/9, / 2
    assert dist["gain_lo"].iloc[0] == pytest.approx(4 / 3 - half)
    assert dist["best"].all() and not kd["best"].any()
    # the largest slope, but the gain intervals overlap (3 seeds): not called "best"
    assert not any("best turns" in n for n in r.notes)
    assert any("dist has the largest slope (+0.205), but its gain +1.33 [" in n
               and "no method is clearly best" in n for n in r.notes)
    assert r.wide.loc["resnet8 · dist", "slope"] == "+0.205 (largest)"
    assert list(r.wide.columns) == ["resnet14 (59.0)", "resnet20 (65.5)", "slope", "gain"]
    assert any("student (trained alone): 51.00 ± 1.00 (3)" in n for n in r.notes)


# -------------------------------------------------------------------------------- agreement


def test_agreement_by_hand(full_db: Database) -> None:
    r = build("agreement", full_db)
    long = r.long
    sel = long[(long["pair"] == "resnet14->resnet8") & (long["row"] == "kd")]
    got = {q: (m, s, n) for q, m, s, n in zip(sel["quantity"], sel["mean"], sel["std"],
                                              sel["n"], strict=True)}
    assert got["agree_top1"] == pytest.approx((82.0, 2.0, 3))
    assert got["spearman"] == pytest.approx((0.8, 0.1, 3))
    assert got["kendall"] == pytest.approx((0.6, 0.1, 3))
    assert got["kl"] == pytest.approx((0.2, 0.1, 3))
    assert got["last_top1"] == pytest.approx((158.5 / 3, math.sqrt(78 / 36 / 2), 3))
    assert r.wide.loc["resnet14->resnet8 · kd", "Spearman ρ"] == "0.800 ± 0.100 (3)"
    assert "student" not in " ".join(r.wide.index)  # no teacher, nothing to agree with
    assert "KL(t‖s)" in r.lower_is_better


# ----------------------------------------------------------------------------------- curves


def test_curves_aggregate_over_seeds(full_db: Database) -> None:
    r = build("curves", full_db)
    long = r.long
    kd = long[(long["series"] == "resnet14->resnet8") & (long["row"] == "kd")]
    top1 = kd[kd["quantity"] == "test_top1"].set_index("epoch")
    # test top-1 = 10*epoch + seed over seeds 0, 1, 2 -> mean 10*epoch + 1, std 1
    assert top1["mean"].tolist() == pytest.approx([11.0, 21.0, 31.0])
    assert top1["std"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    comp = kd[kd["quantity"] == "loss.kd"].set_index("epoch")
    # train loss 3 - 0.5e + 0.1s split in two components -> mean (3 - 0.5e + 0.1) / 2
    assert comp.loc[2, "mean"] == pytest.approx((3 - 1.0 + 0.1) / 2)
    assert "resnet8 · student · test_top1" in r.wide.index
    assert list(r.wide.columns) == ["ep 1", "ep 2", "ep 3"]


# -------------------------------------------------------------------------------- filters


def test_filters_pairs_methods_dataset_grid(full_db: Database) -> None:
    r = build("top1", full_db, Filters(pairs=("resnet20:resnet8",)))
    assert list(r.wide.columns) == ["resnet20->resnet8"]
    r = build("top1", full_db, Filters(methods=("dist",)))
    assert list(r.wide.index) == ["teacher", "student", "dist"]
    r = build("top1", full_db, Filters(dataset="synthetic", grid="rep"))
    assert list(r.wide.index) == ["teacher", "student", "kd", "dist"]
    for bad, msg in ((Filters(grid="nope"), "--grid"), (Filters(dataset="imagenet"), "--dataset"),
                     (Filters(pairs=("a->b",)), "--pairs")):
        with pytest.raises(UserError, match=msg):
            build("top1", full_db, bad)


def test_grid_filter_keeps_shared_student_alone(tmp_path: Path) -> None:
    """A vanilla job enqueued first by another grid still frames this grid's table."""
    db = build_db(tmp_path / "a.db")
    from kdrun import grid as grid_mod
    from kdrun.db import queue
    _, specs = grid_mod.expand(grid_dict(name="second", methods=["vanilla", "kd"]))
    added, present = queue.enqueue(db, "second", specs)
    assert added == 0 and present == len(specs)  # every job already there, owned by "rep"
    r = build("top1", db, Filters(grid="rep"))
    assert "student" in r.wide.index


# ------------------------------------------------------------------------------ paper rows


def test_paper_rows_show_published_numbers_and_difference(tmp_path: Path) -> None:
    raw = {"name": "paper", "dataset": "cifar100", "recipe": {"epochs": 2, "lr_milestones": [1]},
           "teachers": {"resnet56": {"train": True}},
           "pairs": [{"teacher": "resnet56", "student": "resnet20"}],
           "methods": ["vanilla", "kd", "dkd", "cmkd"], "seeds": [0, 1]}
    values = {"teacher": 72.0, "vanilla": 69.0, "kd": 71.0, "dkd": 72.0, "cmkd": 72.5}

    def results(config: dict) -> dict:
        base = values[config["kind"] if config["kind"] == "teacher"
                      else config["method"]["name"]] + 0.5 * config["seed"]
        return {"best_top1": base, "best_top5": 90.0, "best_epoch": 2, "last_top1": base,
                "last_top5": 90.0, "last5_top1": base, "selection_split": "test",
                "wall_time_s": 1.0, "images_per_s": 1.0}

    db = build_db(tmp_path / "p.db", raw, results=results)
    r = build("top1", db)
    pair = "resnet56->resnet20"
    kd = cell(r, "kd", pair)
    assert kd["paper"] == 70.66 and kd["paper_source"] == "repdistiller"
    assert kd["paper_diff"] == pytest.approx(71.25 - 70.66)
    assert r.wide.loc["kd (paper)", pair] == "70.66 (Δ +0.59)"
    assert cell(r, "dkd", pair)["paper"] == 71.97  # mdistiller
    assert cell(r, "teacher", pair)["paper"] == 72.34
    assert cell(r, "student", pair)["paper"] == 69.06
    assert math.isnan(cell(r, "cmkd", pair)["paper"])  # unpublished: no row, not zero
    assert "cmkd (paper)" not in r.wide.index
    assert list(r.wide.index)[:4] == ["teacher", "teacher (paper)", "student", "student (paper)"]
    # issue 13: a protocol only where the source states one
    assert any(n.startswith("paper: repdistiller (not stated)") for n in r.notes)
    assert any(n.startswith("paper: mdistiller (not stated)") for n in r.notes)
    none = build("top1", db, opts=Options(paper=False))
    assert not any("(paper)" in i for i in none.wide.index)
    assert pd.isna(none.long["paper"]).all()


def test_diminishing_paper_rows_from_the_published_ladder(tmp_path: Path) -> None:
    raw = {"name": "ladder", "dataset": "imagenet", "recipe": {"epochs": 2, "lr_milestones": [1]},
           "teachers": {"ResNet34": {"train": True}, "ResNet50": {"train": True}},
           "pairs": [{"teacher": "ResNet34", "student": "ResNet18"},
                     {"teacher": "ResNet50", "student": "ResNet18"}],
           "methods": ["kd"], "seeds": [0, 1]}
    measured = {"ResNet34": 73.0, "ResNet50": 76.0}

    def results(config: dict) -> dict:
        t = (config.get("teacher") or {}).get("name")
        top1 = 70.0 + (1.0 if t == "ResNet50" else 0.0) + 0.5 * config["seed"]
        return {"best_top1": top1, "best_top5": 90.0, "best_epoch": 2, "last_top1": top1,
                "last_top5": 90.0, "last5_top1": top1, "selection_split": "test",
                "wall_time_s": 1.0, "images_per_s": 1.0,
                "teacher_top1": measured.get(t)}

    db = build_db(tmp_path / "l.db", raw, results=results)
    r = build("diminishing", db)
    # published (dist, KD): ResNet34 73.31 -> 71.21, ResNet50 76.13 -> 71.35
    paper = r.wide.loc["ResNet18 · kd (paper)"]
    assert (paper["ResNet34 (73.0)"], paper["ResNet50 (76.0)"]) == ("71.21", "71.35")
    assert paper["slope"] == f"{(71.35 - 71.21) / (76.13 - 73.31):+.3f}"
    assert paper["gain"] == "+0.14"
    ours = r.long[r.long["row"] == "kd"].iloc[0]
    assert ours["slope"] == pytest.approx(1.0 / 3.0)  # (71.25 - 70.25) / (76 - 73)
    assert any(n.startswith("paper: dist (") for n in r.notes)
    top1 = build("top1", db)
    assert cell(top1, "kd", "ResNet34->ResNet18")["paper"] == 71.03  # mdistiller's KD*


def switched(fast: dict, odd: dict | None = None, which=lambda c: False):
    """Results with recorded switches as real jobs have them: `teacher: none` where a job
    has no teacher; `odd` for the jobs `which` picks."""
    def results(config: dict) -> dict:
        sw = dict(odd if odd and which(config) else fast)
        if not config.get("teacher"):
            sw["teacher"] = "none"
        return {**result_for(config), "switches": sw}
    return results


GPU_FAST = {"device": "cuda", "amp": "bf16", "channels_last": True, "compile": True,
            "loader": "device", "teacher": "cache"}
CPU_PLAIN = {"device": "cpu", "amp": "off", "channels_last": False, "compile": False,
             "loader": "torch", "teacher": "live"}


def test_top1_says_how_runs_were_computed(tmp_path: Path) -> None:
    same = build_db(tmp_path / "same.db", results=switched(GPU_FAST))
    assert ("computed as cuda, bf16, channels_last, compile (17 jobs); teacher logits cached "
            "(12 jobs)") in build("top1", same).notes
    plain = build_db(tmp_path / "plain.db", results=switched(CPU_PLAIN))
    assert "computed as cpu, fp32 (17 jobs); teacher logits live (12 jobs)" in build(
        "top1", plain).notes
    assert not any(n.startswith("runs differ") for n in build("top1", same).notes)
    unrecorded = build_db(tmp_path / "old.db")  # results from before switches were recorded
    assert not any("computed as" in n for n in build("top1", unrecorded).notes)


def test_top1_names_the_cells_that_mix_kinds_of_run(tmp_path: Path) -> None:
    """One kd seed ran on a CPU in fp32 with the live teacher, everything else on a GPU with
    every switch on: the note counts both kinds and names the one cell that mixes them."""
    def odd(c: dict) -> bool:
        return (c["method"]["name"] == "kd" and c["seed"] == 1
                and c["teacher"]["name"] == "resnet14")

    db = build_db(tmp_path / "k.db", results=switched(GPU_FAST, CPU_PLAIN, odd))
    mixed = [n for n in build("top1", db).notes if n.startswith("runs differ")]
    assert mixed == ["runs differ: computed as cuda, bf16, channels_last, compile (16 jobs); "
                     "cpu, fp32 (1 job); teacher logits cached (11 jobs); live (1 job); "
                     "cells mixing them: kd resnet14->resnet8 (`kdrun export` has each job's "
                     "switches)"]
