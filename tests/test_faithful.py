"""Issue 13: the baselines resolve their authors' settings, CTKD and MLKD follow the authors'
code, CMKD keeps its Spearman term on, the ablation grids expand, published numbers trace.

Every loss here is checked against an implementation written in this file from the
published formula (not kdrun's functions)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from kdrun import grid, methods, reference
from kdrun.cli import app
from kdrun.data import load as load_data
from kdrun.data import make_loaders
from kdrun.data import resolve as resolve_data
from kdrun.errors import ConfigError
from kdrun.methods.ctkd import grl_lambda
from kdrun.report.filters import Filters
from kdrun.report.tables import build
from tests.test_report_db import build_db

REF = Path(__file__).resolve().parents[1] / "kdrun" / "reference"
LSKD = yaml.safe_load((REF / "lskd_settings.yaml").read_text())
# mdistiller's DKD config beta per pair (CIFAR-100), the value the LS trainer multiplies
MDISTILLER_BETA = {("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
                   ("vgg13", "vgg8"): 6.0, ("vgg13", "MobileNetV2"): 6.0,
                   ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0}


def z(x: torch.Tensor) -> torch.Tensor:
    """The LS authors' normalize(): (x - mean) / (1e-7 + std), std unbiased."""
    return (x - x.mean(-1, keepdim=True)) / (1e-7 + x.std(-1, keepdim=True))


def kl_T(s: torch.Tensor, t: torch.Tensor, T) -> torch.Tensor:
    """Per-sample KL(softmax(t/T) || softmax(s/T))."""
    log_pt = torch.log_softmax(t / T, 1)
    return (log_pt.exp() * (log_pt - torch.log_softmax(s / T, 1))).sum(1)


def logits(b=12, c=100, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, generator=g, dtype=dtype) * 3,
            torch.randn(b, c, generator=g, dtype=dtype) * 3,
            torch.randint(0, c, (b,), generator=g))


def their_settings(kind: str, row: dict) -> dict:
    """The authors' train.py --logit-stand mapping, written out per base."""
    t0, w = row["base_temp"], row["kd_weight"]
    if kind == "dkd":
        beta = row.get("dkd_beta", MDISTILLER_BETA.get((row["teacher"], row["student"]), 8.0))
        return {"T": t0, "alpha": 1.0 * w, "beta": beta * w, "ce_weight": 1.0, "warmup": 20}
    return {"T": t0, "kd_weight": w, "ce_weight": 0.1}


@pytest.mark.parametrize("kind", ["kd", "dkd"])
def test_ls_loss_equals_the_authors_formula_for_every_logged_pair(kind):
    s, t, y = logits()
    for row in LSKD[f"{kind}_ls"]:
        want = their_settings(kind, row)
        got = methods.resolve(f"{kind}+ls", None, teacher=row["teacher"], student=row["student"],
                              dataset="cifar100")[kind]
        assert {k: got[k] for k in want} == want, row
        loss, _ = methods.create(f"{kind}+ls", **{kind: got}).double()(s, t, y, epoch=30)
        ns, nt = z(s), z(t)
        T = want["T"]
        if kind == "kd":
            ref = 0.1 * F.cross_entropy(s, y) + want["kd_weight"] * kl_T(ns, nt, T).mean() * T**2
        else:
            gt = F.one_hot(y, s.shape[1]).bool()
            ps, pt = torch.softmax(ns / T, 1), torch.softmax(nt / T, 1)
            bs = torch.stack([ps[gt], 1 - ps[gt]], 1)
            bt = torch.stack([pt[gt], 1 - pt[gt]], 1)
            tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * T**2
            nckd = kl_T(ns - 1000 * T * gt, nt - 1000 * T * gt, T).mean() * T**2
            ref = F.cross_entropy(s, y) + want["alpha"] * tckd + want["beta"] * nckd
        assert loss.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-9), row


def test_ls_settings_of_ctkd_and_mlkd_and_the_defaults_elsewhere():
    for kind in ("ctkd", "mlkd"):
        for row in LSKD[f"{kind}_ls"]:
            got = methods.resolve(f"{kind}+ls", None, teacher=row["teacher"],
                                  student=row["student"], dataset="cifar100")[kind]
            assert (got["T"], got["kd_weight"], got["ce_weight"]) == (
                row["base_temp"], row["kd_weight"], 0.1)
    # a pair they never ran, and ImageNet (their README: base temperature 2, weight 9)
    got = methods.resolve("kd+ls", None, teacher="vgg13", student="ShuffleV1", dataset="cifar100")
    assert (got["kd"]["T"], got["kd"]["kd_weight"]) == (2.0, 9.0)
    got = methods.resolve("kd+ls", None, teacher="ResNet34", student="ResNet18",
                          dataset="imagenet")["kd"]
    assert (got["T"], got["kd_weight"], got["ce_weight"]) == (2.0, 9.0, 0.5)
    # a grid value wins and is final; rkkd's weight follows the base's kd_weight
    got = methods.resolve("dkd+ls+rkkd", {"dkd": {"beta": 5.0}}, teacher="resnet110",
                          student="resnet20", dataset="cifar100")
    assert (got["dkd"]["alpha"], got["dkd"]["beta"], got["rkkd"]["weight"]) == (15.0, 5.0, 1.0)
    got = methods.resolve("kd+ls+rkkd", None, teacher="resnet110", student="resnet20",
                          dataset="cifar100")
    assert got["rkkd"]["weight"] == 12.0


def test_methods_command_names_each_values_source():
    r = CliRunner().invoke(app, ["methods", "dkd+ls", "--pair", "resnet56", "resnet20",
                                 "--set", "dkd.warmup=5"], terminal_width=250)
    assert r.exit_code == 0, r.output
    line = {ln.split("│")[2].strip(): ln for ln in r.output.splitlines() if ln.count("│") > 3}
    assert "18.0" in line["alpha"] and "published for this pair" in line["alpha"]
    assert "36.0" in line["beta"] and "published for this pair" in line["beta"]  # 2 x 18
    assert "grid" in line["warmup"] and "method default" in line["ce_weight"]


# --------------------------------------------------------------------------------- CTKD

def test_ctkd_loss_temperature_and_reversed_gradient():
    s, t, y = logits(8, 10)
    s.requires_grad_(True)
    m = methods.create("ctkd").double()
    loss, comps = m(s, t, y, epoch=3)
    theta = torch.tensor(1.0, dtype=torch.float64)
    T = 1 + 20 * torch.sigmoid(theta)
    ref = 0.1 * F.cross_entropy(s, y) + 0.9 * kl_T(s, t, T).mean() * T**2
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert comps["temperature"].item() == pytest.approx(T.item())
    lam = (math.cos(3 * math.pi / 10) + 1) / 2 * (0 - (-1)) + (-1)  # their CosineDecay
    assert grl_lambda(3, "cosine", 0.0, -1.0, 10) == pytest.approx(lam)
    assert grl_lambda(25, "cosine", 0.0, -1.0, 10) == -1.0
    loss.backward()
    th = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    T2 = 1 + 20 * torch.sigmoid(th)
    (0.9 * kl_T(s.detach(), t, T2).mean() * T2**2).backward()
    assert m.theta.grad.item() == pytest.approx(lam * th.grad.item(), rel=1e-9)


def test_ctkd_and_mlkd_gradcheck_float64():
    s, t, y = logits(6, 5)
    s = s.requires_grad_(True)
    for name, kw in (("ctkd", {}), ("ctkd", {"temperature": "fixed"}), ("mlkd", {})):
        m = methods.create(name, **kw).double()
        m.prepare(5)
        m.double()
        yy = y if name == "ctkd" else y[:3].repeat(2)
        torch.autograd.gradcheck(lambda a, m=m, yy=yy: m(a, t, yy, epoch=2)[0], (s,),
                                 fast_mode=True)


def test_ctkd_instance_module_gradient_is_reversed():
    """Instance-wise: the MLP's gradient is lambda times the plain one (here -1 vs +1)."""
    s, t, y = logits(6, 5)
    grads = []
    for lo, hi in ((-1.0, 0.0), (1.0, 1.0)):  # epoch 20: lambda -1; constant +1
        torch.manual_seed(0)
        m = methods.create("ctkd", temperature="instance", hidden=4, grl_min=lo, grl_max=hi)
        m.prepare(5)
        m.double()(s, t, y, epoch=20)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], -grads[1]) and grads[0].abs().sum() > 0


def test_ctkd_temperature_module_resumes_exactly(tmp_path):
    from kdrun.models import create as create_model
    from kdrun.params import as_dict, build
    from kdrun.recipe import Recipe
    from kdrun.train.trainer import Hooks, Interrupted, Run, train

    ck = tmp_path / "teacher.pt"
    torch.save({"model": create_model("resnet8", num_classes=4, dataset="synthetic")
                .state_dict()}, ck)
    cfg = {"kind": "student", "seed": 0, "student": "resnet8",
           "dataset": resolve_data({"name": "synthetic", "num_classes": 4, "train_size": 16,
                                    "test_size": 4}),
           "recipe": as_dict(build(Recipe, {"epochs": 2, "batch_size": 8, "lr_milestones": [1],
                                            "eval_batch_size": 8, "loader": "torch"}, "r")),
           "teacher": {"name": "resnet8", "arch": "resnet8", "checkpoint": str(ck)},
           "method": {"name": "ctkd", "params": methods.resolve(
               "ctkd", None, teacher="resnet8", student="resnet8", dataset="synthetic")}}
    rows: dict[str, list] = {"a": [], "b": []}

    def hooks(k, **kw):
        return Hooks(epoch_done=lambda row, p: rows[k].append(row["components"]), **kw)

    a = train(Run(cfg, tmp_path / "a", tmp_path), hooks("a"))
    with pytest.raises(Interrupted):
        train(Run(cfg, tmp_path / "b", tmp_path), hooks("b", stop_requested=lambda: True))
    b = train(Run(cfg, tmp_path / "b", tmp_path), hooks("b"))
    assert rows["a"][1]["temperature"] == rows["b"][1]["temperature"]
    assert rows["a"][1]["temperature"] != rows["a"][0]["temperature"]  # it did train
    wa = torch.load(a["checkpoint"], weights_only=True)["model"]
    wb = torch.load(b["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------------- MLKD

def test_mlkd_loss_equals_the_authors_code_formula():
    s, t, y = logits(16, 10)
    m = methods.create("mlkd").double()
    loss, comps = m(s, t, y[:8].repeat(2), epoch=1)
    sw, ss, tw, ts = s[:8], s[8:], t[:8], t[8:]
    ptw = torch.softmax(tw, 1)
    conf, per_class = ptw.max(1).values, ptw.sum(0)
    mask = torch.tensor(conf.numpy() <= np.percentile(conf.numpy(), 50)).double().mean()
    cmask = torch.tensor(per_class.numpy() <= np.percentile(per_class.numpy(), 50)).double().mean()

    def kd(a, b, T):
        return kl_T(a, b, T).mean() * T**2

    def mats(a, b, T, cls):
        pa, pb = torch.softmax(a / T, 1), torch.softmax(b / T, 1)
        ga, gb = (pa.T @ pa, pb.T @ pb) if cls else (pa @ pa.T, pb @ pb.T)
        return ((gb - ga) ** 2).sum() / (a.shape[1] if cls else a.shape[0])

    Ts = [4.0, 3.0, 5.0, 2.0, 6.0]
    kd_weak = sum(kd(sw, tw, T) * mask for T in Ts)
    kd_strong = (kd(ss, ts, 4.0) + kd(ss, ts, 3.0) + kd(ss, ts, 5.0)  # T, 3, 5 on strong ...
                 + kd(sw, tw, 2.0) + kd(sw, tw, 6.0))  # ... 2, 6 on weak, as their code
    cc = sum(mats(sw, tw, T, True) * cmask for T in Ts)
    bc = sum(mats(sw, tw, T, False) * mask for T in Ts)
    ce = F.cross_entropy(sw, y[:8]) + F.cross_entropy(ss, y[:8])
    ref = 0.1 * ce + 0.9 * (kd_weak + kd_strong + cc + bc)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert comps["kd_strong"].item() == pytest.approx(kd_strong.item(), rel=1e-12)
    # +ls standardizes the KD terms only; the composition sums CE over both views too
    ls, _ = methods.create("mlkd+ls", mlkd={"T": 4.0, "kd_weight": 0.9}).double()(
        s, t, y[:8].repeat(2), epoch=1)
    kd_w = sum(kd(z(sw), z(tw), T) * mask for T in Ts)
    kd_s = (kd(z(ss), z(ts), 4.0) + kd(z(ss), z(ts), 3.0) + kd(z(ss), z(ts), 5.0)
            + kd(z(sw), z(tw), 2.0) + kd(z(sw), z(tw), 6.0))
    assert ls.item() == pytest.approx((0.1 * ce + 0.9 * (kd_w + kd_s + cc + bc)).item(), rel=1e-9)


def test_two_view_loader_and_the_cache_rule():
    splits = load_data(resolve_data({"name": "synthetic", "num_classes": 4, "train_size": 8,
                                     "test_size": 4}), Path("."))
    g = torch.Generator().manual_seed(0)
    kw = dict(batch_size=4, eval_batch_size=4, views=("weak", "strong"))
    ld = make_loaders(splits, "auto", torch.device("cpu"), g, **kw)
    (weak, strong), y = next(iter(ld.train))
    assert weak.shape == strong.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert not torch.equal(weak, strong)
    with pytest.raises(ConfigError, match="loader: device cannot"):
        make_loaders(splits, "device", torch.device("cpu"), g, **kw)
    assert not methods.get("mlkd+ls+rkkd").teacher_logits_only  # no cache for strong views
    assert methods.get("mlkd+rkkd").views == ("weak", "strong")


# --------------------------------------------------------------------------------- CMKD

SPEARMAN_FLOOR = 0.4  # mean weight of the Spearman term on a confident teacher


def test_cmkd_keeps_the_spearman_term_on_for_a_confident_teacher():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 20, (64,), generator=g)
    t = torch.randn(64, 20, generator=g) + 12 * F.one_hot(y, 20)  # ~99 % confident
    s = torch.randn(64, 20, generator=g)
    comps = methods.create("cmkd")(s, t, y)[1]
    assert comps["difficulty"] < 0.05  # the raw entropy-based difficulty is near 0 ...
    assert comps["spearman_weight"] >= SPEARMAN_FLOOR  # ... the rank-normalised weight is not
    old = methods.create("cmkd", difficulty_norm="none")(s, t, y)[1]  # the old behaviour
    assert old["spearman_weight"] == pytest.approx(old["difficulty"].item())
    inv = methods.create("cmkd", difficulty_norm="none", weighting="inverted")(s, t, y)[1]
    assert inv["spearman_weight"] > 0.95
    fixed = methods.create("cmkd", weighting="fixed", spearman_weight=0.3)(s, t, y)[1]
    assert fixed["spearman_weight"].item() == pytest.approx(0.3)


# ------------------------------------------------------------------------- grids, numbers

NEW_GRIDS = {"ls": 258, "rkkd_ablation": 28, "rkkd_plugin": 171, "mlkd": 25,
             "cmkd_weighting": 50, "cakd_ablation": 46}


@pytest.mark.parametrize("name", grid.shipped_grids())
def test_every_shipped_grid_dry_runs(tmp_path, name):
    r = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'g.db'}", "enqueue", "--grid",
                                 f"grids/{name}.yaml", "--dry-run"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "dry run: nothing written" in r.output
    if name in NEW_GRIDS:
        assert len(grid.load(f"grids/{name}.yaml")[1]) == NEW_GRIDS[name]
        head = (grid.resolve_path(f"grids/{name}.yaml")).read_text().split("\nname:")[0]
        assert "Reconstruction" in head and ("Table" in head or "table" in head
                                              or "ablation" in head)


def test_published_rows_trace_to_their_source():
    data = reference.data()
    for key, src in reference.sources().items():
        assert src["protocol"] == "not stated" or key in ("lskd_logs", "torchvision") or (
            src["protocol"].startswith("not stated")), key
    for kind in ("kd", "dkd", "ctkd", "mlkd"):
        for row in LSKD[f"{kind}_ls"]:
            pub = reference.method("cifar100", f"{kind}+ls", row["teacher"], row["student"])
            assert (pub.mean, pub.source) == (row["best_acc"], "lskd_logs")
    r50 = {data["imagenet"]["teachers"]["top1"]["ResNet50"]} | {
        v["teachers"]["ResNet50"] for v in
        data["diminishing_returns"]["imagenet"]["students"].values()}
    assert r50 == {76.13}
    im = data["imagenet"]
    assert im["teachers"]["source"] == im["students"]["source"] == "dist"
    assert reference.method("cifar100", "dkd", "resnet32x4", "ShuffleV2").source == "lskd"


def test_paper_row_only_where_the_settings_match(tmp_path):
    raw = {"name": "paper", "dataset": "cifar100", "recipe": {"epochs": 2, "lr_milestones": [1]},
           "teachers": {"resnet110": {"train": True}},
           "pairs": [{"teacher": "resnet110", "student": "resnet20"}],
           "methods": ["kd+ls", "dkd+ls", {"ctkd+ls": {"ctkd": {"kd_weight": 1.0}}}],
           "seeds": [0]}
    def results(config: dict) -> dict:
        v = 70.0 + 0.5 * len(config["method"]["name"])
        return {"best_top1": v, "best_top5": 90.0, "best_epoch": 2, "last_top1": v,
                "last_top5": 90.0, "last5_top1": v, "selection_split": "test",
                "wall_time_s": 1.0, "images_per_s": 1.0}

    db = build_db(tmp_path / "p.db", raw, results=results)
    r = build("top1", db, Filters())
    pair = "resnet110->resnet20"
    assert r.wide.loc["kd+ls (paper)", pair].startswith("71.46 (Δ")  # the logged run: T 4, 12
    assert r.wide.loc["dkd+ls (paper)", pair].startswith("71.86 (Δ")
    assert r.wide.loc["ctkd+ls (paper)", pair] == "settings differ"  # weight 1, not their 9
