"""What a grid needs to know about each method, without torch: its name, hyperparameters
(`Params`), defaults per pair or dataset, checks against the class count, and how compositions
(`kd+ls+rkkd`) resolve their parts.

`kdrun enqueue` validates and expands a grid with these classes alone (importing torch would
cost seconds and most of a gigabyte per command). Each loss module (kdrun.methods.kd, ...)
subclasses its spec here and adds the torch part (`forward`), so the two never disagree;
kdrun.methods.registry hands out specs to grids and loss modules to trainers.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from kdrun.errors import UserError
from kdrun.methods.published import ls_overrides
from kdrun.params import as_dict, build, field_types


@dataclass
class NoParams:
    pass


class MethodSpec:
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    needs_teacher: ClassVar[bool] = True
    # The loss sees nothing of the teacher but its logits, so cached logits can stand in for
    # the teacher's forward (kdrun.train.teacher_cache). False for feature-based methods.
    teacher_logits_only: ClassVar[bool] = True
    # Augmented views of each image the loss needs, in order (kdrun.methods.base.Method).
    views: ClassVar[tuple[str, ...]] = ("weak",)
    # The base applies a modifier (`+ls`) itself, to the terms its authors apply it to.
    applies_modifier: ClassVar[bool] = False

    @classmethod
    def defaults(cls, *, teacher: str | None, student: str, dataset: str) -> dict[str, Any]:
        """Defaults that depend on the pair or the dataset (e.g. DKD's per-pair beta)."""
        return {}

    @classmethod
    def check(cls, params: dict[str, Any], *, num_classes: int, where: str) -> None:
        """Reject resolved hyperparameters that cannot work with the dataset's class count,
        so a grid fails at enqueue instead of every job failing at run time."""


class AddOnSpec(MethodSpec):
    """A method that can also be added to another one (`kd+rkkd`): it must have `ce_weight`,
    which the composition sets to 0 (the base supplies CE)."""

    @classmethod
    def addon_defaults(cls, base: str, base_params: dict[str, Any]) -> dict[str, Any]:
        """Defaults that follow from the base's resolved hyperparameters."""
        return {}


class ModifierSpec:
    """Transforms logits (student's and teacher's alike) before a base method sees them."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    @classmethod
    def base_defaults(cls, base: str, *, dataset: str | None, teacher: str | None = None,
                      student: str | None = None,
                      current: dict[str, Any] | None = None) -> dict[str, Any]:
        """Overrides of the base's defaults when modified (dataset None: class level);
        `current` is the base's class + pair defaults they may be derived from."""
        return {}

    @classmethod
    def base_source(cls, base: str, *, dataset: str | None, teacher: str | None = None,
                    student: str | None = None, current: dict[str, Any] | None = None) -> str:
        """Where `base_defaults` come from, for `kdrun methods` (e.g. a published run)."""
        return f"{cls.name} default"


# ---- the methods (their losses: kdrun.methods.<name>) ---------------------------------------

class VanillaSpec(MethodSpec):
    name = "vanilla"
    needs_teacher = False


@dataclass
class KDParams:
    T: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9


class KDSpec(MethodSpec):
    name = "kd"
    Params = KDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        # mdistiller: CIFAR-100 T=4, 0.1/0.9; ImageNet T=1, 0.5/0.5.
        return {"T": 1.0, "ce_weight": 0.5, "kd_weight": 0.5} if dataset == "imagenet" else {}


@dataclass
class DKDParams:
    T: float = 4.0
    ce_weight: float = 1.0
    alpha: float = 1.0
    beta: float = 8.0
    warmup: int = 20

    def __post_init__(self) -> None:
        if self.T <= 0 or self.warmup < 0:
            raise ValueError("T must be > 0 and warmup >= 0")


def _key(arch: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (arch or "").lower())


# mdistiller's per-pair beta (teacher, student); every other pair keeps the default 8.
CIFAR_BETA = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "mobilenetv2"): 6.0,
    ("wrn402", "wrn162"): 6.0,
    ("wrn402", "wrn401"): 6.0,
}
IMAGENET_BETA = {("resnet34", "resnet18"): 0.5, ("resnet50", "mobilenetv1"): 2.0}


class DKDSpec(MethodSpec):
    name = "dkd"
    Params = DKDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        pair = (_key(teacher), _key(student))
        imagenet = dataset == "imagenet"
        out: dict = {"T": 1.0, "warmup": 1} if imagenet else {}
        betas = IMAGENET_BETA if imagenet else CIFAR_BETA
        if pair in betas:
            out["beta"] = betas[pair]
        return out


@dataclass
class DISTParams:
    T: float = 4.0
    ce_weight: float = 1.0
    beta: float = 2.0
    gamma: float = 2.0


class DISTSpec(MethodSpec):
    name = "dist"
    Params = DISTParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        return {"T": 1.0} if dataset == "imagenet" else {}


@dataclass
class CAKDParams:
    T: float = 4.0
    ce_weight: float = 1.0
    w_bcd: float = 1.0
    w_scd: float = 8.0
    w_wcd: float = 8.0
    strong_set: Literal["teacher_topk", "label"] = "teacher_topk"
    top_k: int = 5
    warmup: int = 20

    def __post_init__(self) -> None:
        if self.T <= 0 or self.top_k < 1 or self.warmup < 0:
            raise ValueError("T must be > 0, top_k >= 1 and warmup >= 0")


class CAKDSpec(MethodSpec):
    name = "cakd"
    Params = CAKDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        # Reconstruction: ImageNet temperature and warm-up as DKD's.
        return {"T": 1.0, "warmup": 1} if dataset == "imagenet" else {}

    @classmethod
    def check(cls, params: dict[str, Any], *, num_classes: int, where: str) -> None:
        k = params["top_k"]
        if params["strong_set"] == "teacher_topk" and not 1 <= k <= num_classes - 1:
            raise UserError(f"{where}.cakd.top_k: {k} must be between 1 and {num_classes - 1} "
                            f"(the dataset has {num_classes} classes)")


@dataclass
class CTKDParams:
    T: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    temperature: Literal["global", "instance", "fixed"] = "global"
    t_start: float = 1.0
    t_end: float = 20.0
    grl_schedule: Literal["cosine", "linear"] = "cosine"
    grl_max: float = 0.0
    grl_min: float = -1.0
    grl_loops: int = 10
    hidden: int = 256

    def __post_init__(self) -> None:
        if self.T <= 0 or self.t_start <= 0 or self.t_end < 0:
            raise ValueError("T and t_start must be > 0 and t_end >= 0")
        if self.grl_loops < 1 or self.hidden < 1:
            raise ValueError("grl_loops and hidden must be >= 1")


class CTKDSpec(MethodSpec):
    name = "ctkd"
    Params = CTKDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        # The authors' ImageNet script (run_imagenet_distill.sh): -r 1 -a 1, GRL over 5 epochs.
        if dataset == "imagenet":
            return {"ce_weight": 1.0, "kd_weight": 1.0, "grl_loops": 5}
        return {}


@dataclass
class MLKDParams:
    T: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    temperatures: list[float] = field(default_factory=lambda: [3.0, 5.0, 2.0, 6.0])
    weak_in_strong: int = 2  # the last N temperatures of the strong KD sum use the weak view
    quantile: float = 0.5  # the confidence threshold: np.percentile(confidence, 50)

    def __post_init__(self) -> None:
        if self.T <= 0 or any(t <= 0 for t in self.temperatures):
            raise ValueError("T and every temperature must be > 0")
        if not 0 <= self.quantile <= 1:
            raise ValueError("quantile must be in [0, 1]")
        if not 0 <= self.weak_in_strong <= len(self.temperatures) + 1:
            raise ValueError("weak_in_strong must be between 0 and the number of temperatures")


class MLKDSpec(MethodSpec):
    name = "mlkd"
    Params = MLKDParams
    views = ("weak", "strong")
    teacher_logits_only = False  # the teacher runs on strong views the cache cannot hold
    applies_modifier = True

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        # Their ImageNet config (KD_ours): T 1, CE 0.5, KD 0.5.
        return {"T": 1.0, "ce_weight": 0.5, "kd_weight": 0.5} if dataset == "imagenet" else {}


@dataclass
class CMKDParams:
    T: float = 4.0
    ce_weight: float = 1.0
    beta: float = 2.0
    gamma: float = 2.0
    intra: bool = True
    difficulty: Literal["teacher_entropy", "teacher_error", "disagreement"] = "teacher_entropy"
    rank_op: Literal["pairwise_sigmoid"] = "pairwise_sigmoid"
    rank_eps: float = 0.1
    zscore: bool = True
    teacher_rank: Literal["exact", "soft"] = "exact"
    weighting: Literal["difficulty", "inverted", "fixed"] = "difficulty"
    difficulty_norm: Literal["batch_rank", "none"] = "batch_rank"
    spearman_weight: float = 0.5  # weighting="fixed": L = (1-w)*L_P + w*L_S

    def __post_init__(self) -> None:
        if self.T <= 0 or self.rank_eps <= 0:
            raise ValueError("T and rank_eps must be > 0")
        if not 0 <= self.spearman_weight <= 1:
            raise ValueError("spearman_weight must be in [0, 1]")


class CMKDSpec(AddOnSpec):
    name = "cmkd"
    Params = CMKDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        return {"T": 1.0} if dataset == "imagenet" else {}


@dataclass
class RKKDParams:
    k: float = 100.0
    weight: float = 1.0
    ce_weight: float = 1.0
    form: Literal["tanh", "sigmoid", "sign_teacher"] = "tanh"
    channels: Literal["all", "top", "bottom"] = "all"
    channel_frac: float = 0.1

    def __post_init__(self) -> None:
        if self.k <= 0 or not 0 < self.channel_frac <= 1:
            raise ValueError("k must be > 0 and channel_frac in (0, 1]")


class RKKDSpec(AddOnSpec):
    name = "rkkd"
    Params = RKKDParams

    @classmethod
    def addon_defaults(cls, base, base_params):
        return {"weight": base_params["kd_weight"]} if "kd_weight" in base_params else {}


@dataclass
class LSParams:
    eps: float = 1e-7


class LSSpec(ModifierSpec):
    name = "ls"
    Params = LSParams

    # The authors tuned a base temperature and KD weight per pair and their trainer maps them
    # onto each base with its own rule (kdrun.methods.published); bases they never ran with
    # LS (dist, cakd, cmkd, ...) keep their own defaults.
    @classmethod
    def base_defaults(cls, base, *, dataset, teacher=None, student=None, current=None):
        return ls_overrides(base, current or {}, dataset=dataset, teacher=teacher,
                            student=student)[0]

    @classmethod
    def base_source(cls, base, *, dataset, teacher=None, student=None, current=None) -> str:
        return ls_overrides(base, current or {}, dataset=dataset, teacher=teacher,
                            student=student)[1]


METHODS: tuple[type[MethodSpec], ...] = (VanillaSpec, KDSpec, DKDSpec, DISTSpec, CAKDSpec,
                                         CTKDSpec, MLKDSpec, CMKDSpec, RKKDSpec)
MODIFIERS: tuple[type[ModifierSpec], ...] = (LSSpec,)
# The module of each method's loss (it registers the class at import).
MODULES = {"vanilla": "vanilla", "kd": "kd", "dkd": "dkd", "dist": "dist", "cakd": "cakd",
           "ctkd": "ctkd", "mlkd": "mlkd", "cmkd": "cmkd", "rkkd": "rkkd", "ls": "ls"}


# ---- compositions: `<method>[+<modifier>][+<add-on>]` (kdrun.methods.compose) -------------

def class_defaults(cls: type) -> dict[str, Any]:
    """The defaults of `cls.Params` (before pair/dataset defaults)."""
    return as_dict(cls.Params())


@functools.cache
def addon_params(cls: type) -> type:
    """`cls.Params` without `ce_weight`: what a grid may set for `cls` used as an add-on."""
    types = field_types(cls.Params)  # resolved: the annotations are strings
    fields = [
        (f.name, types[f.name], dataclasses.field(default=f.default))
        for f in dataclasses.fields(cls.Params)
        if f.name != "ce_weight"
    ]
    post_init = getattr(cls.Params, "__post_init__", None)  # keep the value checks
    namespace = {"__post_init__": post_init} if post_init else {}
    return dataclasses.make_dataclass(f"{cls.__name__}AddOnParams", fields, namespace=namespace)


class CompositeSpec(MethodSpec):
    """A base method, an optional modifier and an optional add-on, resolved part by part."""

    base_cls: ClassVar[type[MethodSpec]]
    modifier_cls: ClassVar[type[ModifierSpec] | None] = None
    addon_cls: ClassVar[type[MethodSpec] | None] = None

    @classmethod
    def part_names(cls) -> list[str]:
        return [c.name for c in (cls.base_cls, cls.modifier_cls, cls.addon_cls) if c]

    @classmethod
    def resolve_parts(
        cls,
        hparams: dict[str, Any] | None,
        *,
        teacher: str | None = None,
        student: str = "",
        dataset: str | None = None,
        where: str = "method",
    ) -> dict[str, Any]:
        """Validated Params per part; `dataset=None` (as in `create`) skips pair defaults."""
        where = f"{where}.{cls.name}"
        names = cls.part_names()
        if hparams is None:
            hparams = {}
        if not isinstance(hparams, dict):
            raise UserError(f"{where}: expected a mapping of parts ({', '.join(names)})")
        unknown = sorted(set(hparams) - set(names))
        if unknown:
            raise UserError(
                f"{where}: unknown part {unknown[0]!r}; valid parts: {', '.join(names)} "
                f"(hyperparameters go under their part, e.g. {{{names[0]}: {{...}}}})"
            )
        given: dict[str, dict[str, Any]] = {}
        for n in names:
            v = hparams.get(n)
            if v is not None and not isinstance(v, dict) and not dataclasses.is_dataclass(v):
                raise UserError(f"{where}.{n}: expected a mapping of {n}'s hyperparameters")
            given[n] = as_dict(v) if dataclasses.is_dataclass(v) else dict(v or {})

        def pair(c: type[MethodSpec]) -> dict[str, Any]:
            if dataset is None:
                return {}
            return c.defaults(teacher=teacher, student=student, dataset=dataset)

        base, mod, addon = cls.base_cls, cls.modifier_cls, cls.addon_cls
        values = {**pair(base)}
        if mod:
            current = {**class_defaults(base), **values}
            values.update(mod.base_defaults(base.name, dataset=dataset, teacher=teacher,
                                            student=student, current=current))
        values.update(given[base.name])
        out: dict[str, Any] = {base.name: build(base.Params, values, f"{where}.{base.name}")}
        if mod:
            out[mod.name] = build(mod.Params, given[mod.name], f"{where}.{mod.name}")
        if addon:
            params = addon_params(addon)
            keys = {f.name for f in dataclasses.fields(params)}
            values = {k: v for k, v in pair(addon).items() if k in keys}
            if issubclass(addon, AddOnSpec):
                values.update(addon.addon_defaults(base.name, as_dict(out[base.name])))
            values.update(given[addon.name])
            out[addon.name] = build(params, values, f"{where}.{addon.name}")
        return out

    @classmethod
    def check(cls, params: dict[str, Any], *, num_classes: int, where: str) -> None:
        for c in (cls.base_cls, cls.addon_cls):
            if c is not None:
                c.check(params[c.name], num_classes=num_classes, where=f"{where}.{cls.name}")


def composite_attrs(name: str, base: type[MethodSpec], modifier: type[ModifierSpec] | None,
                    addon: type[MethodSpec] | None) -> dict[str, Any]:
    """The class attributes of the composition `name` of these parts (spec or loss classes)."""
    parts = [c for c in (base, modifier, addon) if c]
    params = dataclasses.make_dataclass(
        name.replace("+", "_") + "_params",
        [(c.name, dict, dataclasses.field(default_factory=dict)) for c in parts],
    )
    return {
        "name": name,
        "Params": params,
        "needs_teacher": base.needs_teacher or bool(addon and addon.needs_teacher),
        "teacher_logits_only": all(c.teacher_logits_only for c in (base, addon) if c),
        "views": base.views,
        "base_cls": base,
        "modifier_cls": modifier,
        "addon_cls": addon,
        "__doc__": f"Composed method {name}: " + ", ".join(c.__name__ for c in parts) + ".",
    }


def make_spec(name: str, base: type[MethodSpec], modifier: type[ModifierSpec] | None,
              addon: type[MethodSpec] | None) -> type[CompositeSpec]:
    return type(name.replace("+", "_") + "_spec", (CompositeSpec,),
                composite_attrs(name, base, modifier, addon))
