"""The logit-standardization authors' per-pair settings, as `+ls` defaults (package data).

`kdrun/reference/lskd_settings.yaml` lists, for each CIFAR-100 run in the authors' public
logs, the base temperature and KD weight (and DKD's beta where the file name gives one).
Their `tools/train.py --logit-stand --base-temp T0 --kd-weight W` turns those into each base
method's hyperparameters; `ls_overrides` applies the same rule here:

- kd, mlkd, ctkd: `T := T0`, `kd_weight := W` (the CE weight stays the config's: 0.1);
- dkd: `alpha := alpha * W`, `beta := beta * W` (beta: the log's 6th field, else the DKD
  config's per-pair beta), `T := T0` (CE weight 1, warm-up 20 stay).

Pairs (and datasets) without a run keep the authors' command-line defaults `T0 = 2`, `W = 9`
(`train.py`'s defaults and every command of their README, ImageNet's included) with the same
rule. A grid value always wins and is taken as the final value (not multiplied).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

import yaml

LS_BASES = ("kd", "dkd", "mlkd", "ctkd")
DEFAULT_TEMP, DEFAULT_WEIGHT = 2.0, 9.0  # train.py --base-temp / --kd-weight defaults
LOGS = "sunshangquan/logit-standardization-KD logs/"


def arch_key(arch: str | None) -> str:
    """Architecture names compared ignoring case and `_`/`-` (`wrn_40_2` = `WRN-40-2`)."""
    return re.sub(r"[^a-z0-9]", "", (arch or "").lower())


@functools.cache
def lskd_settings() -> dict[str, list[dict[str, Any]]]:
    text = (resources.files("kdrun") / "reference" / "lskd_settings.yaml").read_text()
    return yaml.safe_load(text)


def ls_run(base: str, teacher: str | None, student: str | None) -> dict[str, Any] | None:
    """The authors' logged `<base>+ls` run for this pair (CIFAR-100), or None."""
    key = (arch_key(teacher), arch_key(student))
    for row in lskd_settings().get(f"{base}_ls", []):
        if (arch_key(row["teacher"]), arch_key(row["student"])) == key:
            return row
    return None


def ls_overrides(base: str, current: dict[str, Any], *, dataset: str | None,
                 teacher: str | None, student: str | None) -> tuple[dict[str, Any], str]:
    """(overrides of `base`'s resolved defaults `current`, where they come from)."""
    if base not in LS_BASES:
        return {}, ""
    run = ls_run(base, teacher, student) if dataset not in ("imagenet",) else None
    if run is not None:
        t0, w = float(run["base_temp"]), float(run["kd_weight"])
        name = f"{base},{run['teacher']},{run['student']},{t0:g},{w:g}"
        if "dkd_beta" in run:
            name += f",{float(run['dkd_beta']):g}"
        source = f"published for this pair (LS run log {name}.txt, best {run['best_acc']})"
    else:
        t0, w = DEFAULT_TEMP, DEFAULT_WEIGHT
        source = ("LS default (no logged LS run for this pair/dataset): the authors' README "
                  f"commands and train.py defaults, base_temp {t0:g}, kd_weight {w:g}")
    if base == "dkd":
        beta = float(run["dkd_beta"]) if run is not None and "dkd_beta" in run else current["beta"]
        return {"T": t0, "alpha": current["alpha"] * w, "beta": beta * w}, source
    return {"T": t0, "kd_weight": w}, source
