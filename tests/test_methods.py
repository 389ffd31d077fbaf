"""Distillation losses: sanity (finite, non-negative, minimal at the teacher, gradcheck),
the identities they rest on, per-pair defaults, and composition (`kd+ls`, `kd+rkkd`, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdrun.errors import UserError
from kdrun.methods import available, create, needs_teacher, resolve
from kdrun.methods.cmkd import difficulty
from kdrun.methods.functional import split_kl, standardize
from kdrun.methods.kd import kl_div

SINGLE = ["kd", "dkd", "dist", "cakd", "cmkd", "rkkd"]
COMPOSED = ["kd+ls", "dkd+ls", "kd+rkkd", "dkd+rkkd", "dist+rkkd", "kd+cmkd", "dkd+ls+rkkd"]
CIFAR = {"teacher": "resnet32x4", "student": "resnet8x4", "dataset": "cifar100"}

# Small-input settings where gradients are not saturated (rank losses with moderate k).
SMOOTH = {
    "kd": {},
    "dkd": {},
    "dist": {},
    "cakd": {"top_k": 2},
    "cmkd": {"rank_eps": 0.5},
    "rkkd": {"k": 1.0},
    "kd+ls": {},
    "dkd+rkkd": {"rkkd": {"k": 1.0}},
    "kd+cmkd": {"cmkd": {"rank_eps": 0.5}},
    "dkd+ls+rkkd": {"rkkd": {"k": 1.0, "channels": "top", "channel_frac": 0.5}},
    "cmkd_soft_teacher": {"rank_eps": 0.5, "teacher_rank": "soft", "difficulty": "teacher_error"},
    "rkkd_sign_teacher": {"k": 1.0, "form": "sign_teacher", "channels": "bottom"},
}


def make(key: str):
    name = key.split("_")[0]
    return create(name, **SMOOTH.get(key, {}))


def inputs(B=6, C=8, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    zs = (scale * torch.randn(B, C, generator=g, dtype=dtype)).requires_grad_()
    zt = scale * torch.randn(B, C, generator=g, dtype=dtype)
    y = torch.randint(0, C, (B,), generator=g)
    return zs, zt, y


def distill(method, zs, zt, y, epoch=30):
    """The method's loss without its CE term (what must be minimal at zs = zt)."""
    loss, _ = method(zs, zt, y, epoch)
    ce_weight = method.ce_weight if hasattr(method, "ce_weight") else method.p.ce_weight
    return loss - ce_weight * F.cross_entropy(zs, y)


# --- registry ---


def test_available_lists_methods_and_compositions():
    names = available()
    assert set(SINGLE + COMPOSED + ["vanilla", "kd+ls+rkkd", "dist+cmkd"]) <= set(names)
    assert "ls" not in names and "vanilla+rkkd" not in names and "rkkd+rkkd" not in names
    for name in names:
        create(name)  # every listed name builds with its defaults
    assert needs_teacher("kd+rkkd") and needs_teacher("dkd+ls") and not needs_teacher("vanilla")


# --- every loss: finite, non-negative, minimal at the teacher, correct gradients ---


@pytest.mark.parametrize("name", [n for n in available() if n != "vanilla"])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_finite_and_nonnegative(name, scale):
    zs, zt, y = inputs(B=8, C=10, dtype=torch.float32, scale=scale)
    loss, comps = create(name)(zs, zt, y, 5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    for key, value in comps.items():
        assert not value.requires_grad, key
        assert torch.isfinite(value) and value >= -1e-5, (key, value)


@pytest.mark.parametrize("key", list(SMOOTH))
def test_gradcheck(key):
    method = make(key)
    zs, zt, y = inputs(B=3, C=5, seed=1)
    assert torch.autograd.gradcheck(lambda z: method(z, zt, y, 7)[0], (zs,))


@pytest.mark.parametrize("name", ["kd", "dkd", "cakd", "kd+ls", "dkd+ls", "cakd+ls"])
def test_divergences_are_zero_and_stationary_at_the_teacher(name):
    method = create(name)
    _, zt, y = inputs(seed=2)
    zs = zt.clone().requires_grad_()
    value = distill(method, zs, zt, y)
    (grad,) = torch.autograd.grad(value, zs)
    assert abs(value.item()) < 1e-9 and grad.abs().max() < 1e-7
    # logits are only defined up to a per-sample shift (softmax): still zero
    shifted = (zt + torch.randn(zt.shape[0], 1, dtype=zt.dtype)).requires_grad_()
    assert abs(distill(method, shifted, zt, y).item()) < 1e-9
    # and anything else is worse
    other, _, _ = inputs(seed=3)
    assert distill(method, other, zt, y) > 1e-3


def test_rank_losses_are_zero_for_order_preserving_students():
    """Spearman (teacher ranked softly, z-scored) and Kendall (large-k limit) terms vanish for
    any positive affine map of the teacher's logits, and not for a reordering."""
    _, zt, y = inputs(seed=4)
    zt = zt.mul(100).round().div(100)  # every nonzero gap >= 1e-2, so k=1e4 saturates tanh
    perm = zt[:, torch.randperm(zt.shape[1])]
    rkkd = create("rkkd", k=1e4)
    cmkd = create("cmkd", teacher_rank="soft")
    for zs in (zt, 3 * zt + 2, 0.5 * zt - 1):
        assert rkkd(zs, zt, y)[1]["rank"] < 1e-9
        assert cmkd.spearman(zs, zt).abs().max() < 1e-6
    assert rkkd(perm, zt, y)[1]["rank"] > 0.1
    assert cmkd.spearman(perm, zt).mean() > 0.1
    # the published reconstruction (exact teacher ranks): only ~0, -> 0 as rank_eps -> 0
    gaps = [create("cmkd", rank_eps=e).spearman(zt, zt).max().item() for e in (0.3, 0.1, 1e-4)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-9, gaps


@pytest.mark.parametrize("name", ["cmkd", "dist"])
def test_correlation_losses_minimal_at_the_teacher(name):
    _, zt, y = inputs(seed=5)
    method = create(name, teacher_rank="soft") if name == "cmkd" else create(name)
    at_teacher = distill(method, zt.clone(), zt, y)
    # not exactly 0: DIST's Pearson has eps=1e-8 added to the norm product (tiny norms at T=4)
    assert 0 <= at_teacher < 1e-3
    shifted = zt + torch.randn(zt.shape[0], 1, dtype=zt.dtype)  # same softmax
    torch.testing.assert_close(distill(method, shifted, zt, y), at_teacher)
    for seed in range(5):  # random students and small perturbations of the teacher
        other, _, _ = inputs(seed=10 + seed)
        near = zt + 0.1 * torch.randn_like(zt)
        assert distill(method, other, zt, y) > at_teacher
        assert distill(method, near, zt, y) > at_teacher


# --- KD identities ---


def test_dkd_with_sample_beta_equals_kd():
    """TCKD + (1 - pt[label]) * NCKD = KL(pt || ps) per sample (Zhao et al., eq. 1)."""
    zs, zt, y = inputs(B=16, C=10, seed=6, scale=3.0)
    label = F.one_hot(y, 10).bool()
    for T in (1.0, 4.0):
        tckd, _, nckd, pt_gt, _ = split_kl(zs, zt, label, T)
        torch.testing.assert_close(pt_gt, F.softmax(zt / T, 1)[label])
        torch.testing.assert_close((tckd + (1 - pt_gt) * nckd).mean(), kl_div(zs, zt, T))


def test_dkd_matches_its_definition_and_warms_up():
    zs, zt, y = inputs(B=8, C=10, seed=7)
    T = 4.0
    dkd = create("dkd", T=T, alpha=0.5, beta=3.0, warmup=20)
    gt = F.one_hot(y, 10).bool()
    # mdistiller's formulation: binary KL on [p_gt, 1 - p_gt]; NCKD with the target masked
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    bs = torch.stack([ps[gt], 1 - ps[gt]], 1)
    bt = torch.stack([pt[gt], 1 - pt[gt]], 1)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * T**2
    log_qs = F.log_softmax(zs / T - 1000.0 * gt, 1)
    qt = F.softmax(zt / T - 1000.0 * gt, 1)
    nckd = (qt * (qt.clamp_min(1e-300).log() - log_qs)).sum(1).mean() * T**2
    ce = F.cross_entropy(zs, y)
    for epoch, ramp in ((0, 0.0), (10, 0.5), (20, 1.0), (100, 1.0)):
        loss, comps = dkd(zs, zt, y, epoch)
        torch.testing.assert_close(comps["tckd"], tckd.detach())
        torch.testing.assert_close(comps["nckd"], nckd.detach())
        torch.testing.assert_close(loss, ce + ramp * (0.5 * tckd + 3.0 * nckd))


@pytest.mark.parametrize(
    ("teacher", "student", "dataset", "expected"),
    [
        ("resnet56", "resnet20", "cifar100", {"beta": 2.0, "T": 4.0, "warmup": 20}),
        ("resnet110", "resnet32", "cifar100", {"beta": 2.0}),
        ("vgg13", "vgg8", "cifar100", {"beta": 6.0}),
        ("vgg13", "MobileNetV2", "cifar100", {"beta": 6.0}),
        ("wrn_40_2", "wrn_16_2", "cifar100", {"beta": 6.0}),
        ("wrn_40_2", "wrn_40_1", "cifar100", {"beta": 6.0}),
        ("resnet32x4", "resnet8x4", "cifar100", {"beta": 8.0}),
        ("resnet110", "resnet20", "cifar100", {"beta": 8.0}),
        ("ResNet34", "ResNet18", "imagenet", {"beta": 0.5, "T": 1.0, "warmup": 1}),
        ("resnet50", "mobilenet_v1", "imagenet", {"beta": 2.0, "T": 1.0, "warmup": 1}),
    ],
)
def test_dkd_pair_defaults(teacher, student, dataset, expected):
    full = resolve("dkd", None, teacher=teacher, student=student, dataset=dataset)
    assert {k: full[k] for k in expected} == expected
    # grid values still win over pair defaults
    assert resolve("dkd", {"beta": 1}, teacher=teacher, student=student, dataset=dataset)[
        "beta"
    ] == 1.0


@pytest.mark.parametrize("size", [1, 2, 5, 9])
def test_cakd_terms_with_teacher_mass_weights_sum_to_kl(size):
    """BCD + pt_S*SCD + pt_W*WCD = KL(pt || ps) for any strong set, sizes 1 .. C-1."""
    C = 10
    zs, zt, y = inputs(B=12, C=C, seed=8, scale=4.0)
    g = torch.Generator().manual_seed(size)
    strong = torch.zeros(12, C, dtype=torch.bool)
    for row in strong:  # a random (not top-k) set per sample
        row[torch.randperm(C, generator=g)[:size]] = True
    for T in (1.0, 4.0):
        bcd, scd, wcd, pt_s, pt_w = split_kl(zs, zt, strong, T)
        torch.testing.assert_close((bcd + pt_s * scd + pt_w * wcd).mean(), kl_div(zs, zt, T))
        if size == 1:
            assert scd.abs().max() == 0
        if size == C - 1:
            assert wcd.abs().max() == 0


@pytest.mark.parametrize("top_k", [1, 9])
def test_cakd_extreme_sets_have_no_nan(top_k):
    zs, zt, y = inputs(B=8, C=10, seed=9, dtype=torch.float32, scale=200.0)
    loss, comps = create("cakd", top_k=top_k, T=1.0)(zs, zt, y, 50)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    assert all(torch.isfinite(v) for v in comps.values())
    with pytest.raises(UserError, match="top_k"):
        create("cakd", top_k=10)(zs, zt, y)


def test_cakd_strong_set_is_the_teachers_top_k():
    zs, zt, y = inputs(seed=18)
    T, k = 4.0, 3
    strong = torch.zeros_like(zt, dtype=torch.bool)
    for row, order in zip(strong, zt.argsort(1, descending=True), strict=True):
        row[order[:k]] = True
    bcd, scd, wcd, _, _ = split_kl(zs, zt, strong, T)
    loss, comps = create("cakd", T=T, top_k=k, w_bcd=2.0, w_scd=3.0, w_wcd=5.0)(zs, zt, y, 40)
    for key, term in (("bcd", bcd), ("scd", scd), ("wcd", wcd)):
        torch.testing.assert_close(comps[key], term.mean().detach() * T**2)
    expected = F.cross_entropy(zs, y) + T**2 * (2 * bcd + 3 * scd + 5 * wcd).mean()
    torch.testing.assert_close(loss, expected)


def test_cakd_with_label_split_is_dkd():
    zs, zt, y = inputs(seed=10)
    cakd = create("cakd", strong_set="label", w_bcd=1.0, w_scd=5.0, w_wcd=8.0, warmup=20)
    dkd = create("dkd", alpha=1.0, beta=8.0, warmup=20)
    for epoch in (3, 40):
        torch.testing.assert_close(cakd(zs, zt, y, epoch)[0], dkd(zs, zt, y, epoch)[0])


def test_dist_terms_match_definition():
    zs, zt, y = inputs(B=7, C=9, seed=11)
    T = 4.0
    ps = F.softmax(zs / T, 1).detach().numpy()
    pt = F.softmax(zt / T, 1).numpy()

    def corr(a, b):  # numpy's Pearson, row by row
        return np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b, strict=True)])

    inter = (1 - corr(ps, pt)).mean() * T**2
    intra = (1 - corr(ps.T, pt.T)).mean() * T**2
    loss, comps = create("dist", T=T, beta=2.0, gamma=3.0)(zs, zt, y)
    assert comps["inter"].item() == pytest.approx(inter, rel=1e-6)
    assert comps["intra"].item() == pytest.approx(intra, rel=1e-6)
    ce = F.cross_entropy(zs, y).item()
    assert loss.item() == pytest.approx(ce + 2.0 * inter + 3.0 * intra, rel=1e-6)


def test_cmkd_combines_pearson_and_spearman_by_difficulty():
    zs, zt, y = inputs(seed=12)
    cmkd = create("cmkd", T=2.0, beta=3.0, gamma=0.5, difficulty="teacher_error",
                  difficulty_norm="none")  # raw d as the weight (issue 13: a named choice)
    d = 1 - F.softmax(zt, 1).gather(1, y[:, None])[:, 0]
    l_p = 1 - torch.tensor([np.corrcoef(a, b)[0, 1] for a, b in zip(
        F.softmax(zs / 2, 1).detach().numpy(), F.softmax(zt / 2, 1).numpy(), strict=True)])
    l_s = cmkd.spearman(zs, zt)
    loss, comps = cmkd(zs, zt, y)
    intra = comps["intra"] / 4
    expected = F.cross_entropy(zs, y) + 4 * (3.0 * ((1 - d) * l_p + d * l_s).mean() + 0.5 * intra)
    torch.testing.assert_close(loss, expected)
    pt, ps = F.softmax(zt, 1).numpy(), F.softmax(zs, 1).detach().numpy()
    expected = {
        "teacher_entropy": -(pt * np.log(pt)).sum(1) / np.log(pt.shape[1]),
        "teacher_error": 1 - pt[np.arange(len(y)), y.numpy()],
        "disagreement": 0.5 * np.abs(ps - pt).sum(1),
    }
    for measure, values in expected.items():
        d = difficulty(zs, zt, y, measure)
        assert not d.requires_grad
        np.testing.assert_allclose(d.numpy(), values, rtol=1e-9)
        assert create("cmkd", difficulty=measure)(zs, zt, y)[1]["difficulty"] == pytest.approx(
            values.mean())
    # the extremes: a uniform teacher is maximally difficult, a confident one is easy
    uniform, confident = torch.zeros(1, 8), torch.eye(8)[:1] * 50
    assert difficulty(zs[:1], uniform, y[:1], "teacher_entropy").item() == pytest.approx(1)
    assert difficulty(zs[:1], confident, y[:1], "teacher_entropy").item() < 1e-6
    no_intra = create("cmkd", intra=False)(zs, zt, y)[1]
    assert "intra" not in no_intra


def test_rkkd_forms_and_channels():
    zs, zt, y = inputs(B=4, C=20, seed=13)
    tau = create("rkkd").tau
    k = 3.0
    torch.testing.assert_close(
        create("rkkd", k=k, form="sigmoid").tau(zs, zt), create("rkkd", k=k / 2).tau(zs, zt)
    )
    # channels: ranks only among the teacher's top / bottom 20% classes
    top = create("rkkd", k=k, channels="top", channel_frac=0.2)
    idx = zt.topk(4, 1).indices
    sub = create("rkkd", k=k)
    torch.testing.assert_close(top.tau(zs, zt), sub.tau(zs.gather(1, idx), zt.gather(1, idx)))
    assert not torch.allclose(tau(zs, zt), top.tau(zs, zt))


# --- logit standardization ---


def test_kd_ls_is_kd_on_standardized_logits_with_raw_ce():
    zs, zt, y = inputs(seed=14, scale=5.0)
    full = resolve("kd+ls", None, **CIFAR)
    assert full["kd"] == {"T": 2.0, "ce_weight": 0.1, "kd_weight": 9.0}  # published
    loss, comps = create("kd+ls")(zs, zt, y)
    kd = kl_div(standardize(zs), standardize(zt), 2.0) * 4
    torch.testing.assert_close(loss, 0.1 * F.cross_entropy(zs, y) + 9.0 * kd)
    torch.testing.assert_close(comps["ce"], F.cross_entropy(zs, y).detach())
    # invariant to the scale and offset of either model's logits
    torch.testing.assert_close(create("kd+ls")(3 * zs + 1, 0.2 * zt, y)[1]["kd"], comps["kd"])
    # grid values override the published defaults; bases the LS authors never ran keep theirs
    assert resolve("kd+ls", {"kd": {"T": 3}}, **CIFAR)["kd"]["T"] == 3.0
    assert resolve("dist+ls", None, **CIFAR)["dist"] == resolve("dist", None, **CIFAR)


def test_dkd_ls_standardizes_only_the_distillation_terms():
    zs, zt, y = inputs(seed=15, scale=5.0)
    loss, _ = create("dkd+ls", dkd={"warmup": 0})(zs, zt, y)
    # the LS trainer's DKD: T = base temperature 2, alpha and beta times the weight 9
    dkd = create("dkd", warmup=0, ce_weight=0.0, T=2.0, alpha=9.0, beta=72.0)
    expected = F.cross_entropy(zs, y) + dkd(standardize(zs), standardize(zt), y)[0]
    torch.testing.assert_close(loss, expected)


# --- composition ---


def test_composed_total_is_sum_of_parts():
    zs, zt, y = inputs(B=8, C=12, seed=16, dtype=torch.float32)
    both = create("kd+rkkd", kd={"T": 4}, rkkd={"k": 100, "weight": 0.9})
    loss, comps = both(zs, zt, y)
    kd_loss, kd_comps = create("kd", T=4)(zs, zt, y)
    rank = 1 - create("rkkd", k=100).tau(zs, zt).mean()
    torch.testing.assert_close(loss, kd_loss + 0.9 * rank)  # CE counted once
    assert set(comps) == {"ce", "kd", "rkkd_rank"}
    torch.testing.assert_close(comps["rkkd_rank"], rank.detach())
    g_both = torch.autograd.grad(loss, zs)[0]
    g_sum = torch.autograd.grad(kd_loss + 0.9 * rank, zs)[0]
    torch.testing.assert_close(g_both, g_sum)


def test_components_of_parts_do_not_collide():
    zs, zt, y = inputs(seed=17)
    _, comps = create("dist+cmkd")(zs, zt, y)
    assert {"ce", "inter", "intra", "cmkd_pearson", "cmkd_spearman", "cmkd_intra"} <= set(comps)
    _, comps = create("dkd+ls+rkkd")(zs, zt, y)
    assert set(comps) == {"ce", "tckd", "nckd", "rkkd_rank"}


def test_resolve_composed_is_nested_and_round_trips_through_create():
    grid = {"kd": {"T": 4}, "rkkd": {"k": 100, "weight": 0.9}}
    full = resolve("kd+rkkd", grid, **CIFAR)
    assert full == {
        "kd": {"T": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
        "rkkd": {"k": 100.0, "weight": 0.9, "form": "tanh", "channels": "all",
                 "channel_frac": 0.1},
    }
    # the add-on's weight defaults to the base's KL weight (RKKD's setting)
    imagenet = {"teacher": "ResNet34", "student": "ResNet18", "dataset": "imagenet"}
    assert resolve("kd+rkkd", None, **imagenet)["rkkd"]["weight"] == 0.5
    assert resolve("dkd+rkkd", None, teacher="resnet56", student="resnet20",
                   dataset="cifar100")["dkd"]["beta"] == 2.0
    method = create("kd+rkkd", **full)
    assert method.p.kd == full["kd"] and method.p.rkkd == full["rkkd"]


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("kd+rkkd", {"T": 4}, r"unknown part 'T'; valid parts: kd, rkkd"),
        ("kd+rkkd", {"rkkd": {"ce_weight": 1.0}}, r"rkkd: unknown key 'ce_weight'; valid keys: k,"),
        ("kd+rkkd", {"kd": {"tau": 1}}, r"kd\+rkkd\.kd: unknown key 'tau'; valid keys: T,"),
        ("kd+rkkd", {"kd": 4}, r"expected a mapping"),
        ("kd+rkkd", {"rkkd": {"form": "cos"}}, r"'cos' is not one of 'tanh', 'sigmoid'"),
        ("kd+foo", None, r"add-ons: cmkd, rkkd"),
        ("kd+rkkd+ls", None, r"unexpected 'ls'"),
        ("rkkd+rkkd", None, r"unexpected 'rkkd'"),
        ("vanilla+rkkd", None, r"'vanilla' cannot be a base"),
        ("ls", None, r"use it as e.g. 'kd\+ls'"),
        ("cakd", {"top_k": 0}, r"top_k"),
    ],
)
def test_resolve_rejects_bad_names_and_keys(name, hparams, message):
    with pytest.raises(UserError, match=message):
        resolve(name, hparams, **CIFAR)
