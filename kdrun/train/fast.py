"""How a job's step runs on its device: bf16 autocast, channels_last, torch.compile.

The recipe says `auto | on | off` for each switch (`auto` = on on CUDA, off on CPU); `resolve`
turns that into what this job runs with and `Speed.record()` into what its result records.
The switches change how the step is computed, never what: with all of them off the step is
the plain fp32 eager one, bit for bit.

- amp: the student's forward (and a live teacher's) under bf16 autocast; logits are cast to
  float32 before the loss, which therefore runs in full precision. bf16 keeps fp32's range,
  so no loss scaling is needed.
- channels_last: weights and inputs in NHWC, the layout tensor-core convolutions want.
- compile: `torch.compile` of the full-batch forward (and so its backward); on CUDA in
  "reduce-overhead" mode, i.e. replayed as CUDA graphs, which removes the per-kernel launch
  cost that dominates small CIFAR models at batch 64. Only the recipe's batch size is
  compiled; the one smaller batch at the end of an epoch runs eagerly instead of costing a
  second compilation. Evaluation runs the eager module. A multi-GPU (DDP) job compiles
  without CUDA graphs (kdrun.train.ddp).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.recipe import Recipe

COMPILE_MODE = {"cuda": "reduce-overhead", "cpu": "default"}


@dataclass(frozen=True)
class Speed:
    device: torch.device
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False

    def autocast(self) -> AbstractContextManager[Any]:
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the device, in the chosen memory format (in place)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def compiled(self, model: nn.Module,
                 graphs: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
        """What full batches call: a compiled wrapper sharing the module's parameters (its
        state_dict keys stay those of the module), or the module itself. `graphs=False`:
        without CUDA graphs (under DDP, see kdrun.train.ddp)."""
        if not self.compile:
            return model
        mode = COMPILE_MODE[self.device.type] if graphs else "default"
        return torch.compile(model, mode=mode, dynamic=False)

    def step_begin(self) -> None:
        """Tell CUDA-graph trees a new iteration starts (outputs of the last may be reused)."""
        if self.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()

    def record(self) -> dict[str, Any]:
        return {"device": self.device.type, "amp": "bf16" if self.amp else "off",
                "channels_last": self.channels_last, "compile": self.compile}


def _switch(name: str, value: str, on: str, device: torch.device) -> bool:
    if value == "auto":
        return device.type == "cuda"
    if value not in (on, "off"):
        raise ConfigError(f"recipe.{name}: {value!r} is not one of 'auto', {on!r}, 'off'")
    return value == on


def resolve(recipe: Recipe, device: torch.device) -> Speed:
    """The switches this job runs with on `device`."""
    amp = _switch("amp", recipe.amp, "bf16", device)
    if recipe.amp == "auto" and amp and not torch.cuda.is_bf16_supported(including_emulation=False):
        amp = False  # pre-Ampere GPUs emulate bf16 slowly: auto means fp32 there
    return Speed(device, amp=amp,
                 channels_last=_switch("channels_last", recipe.channels_last, "on", device),
                 compile=_switch("compile", recipe.compile, "on", device))
