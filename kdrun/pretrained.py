"""torchvision's pretrained ImageNet weights as kdrun teachers, by their weights enum name.

A grid's `ResNet34: {torchvision: IMAGENET1K_V1}` names one member of torchvision's
`ResNet34_Weights` (DEFAULT allowed, resolved to the member it stands for). `resolve` turns it,
at enqueue, into everything a worker needs and a report shows: the weights' full name, URL,
file name, the sha256 prefix torchvision publishes in that file name, and the published top-1
and top-5 from the weights' metadata. The file is the one `torch.hub` caches, under
`TORCH_HOME/hub/checkpoints/` (default ~/.cache/torch/hub/checkpoints/), so weights that
torchvision already downloaded are found where they are. `locate` finds (or, when allowed,
downloads) and verifies it; torchvision's ResNets have exactly the keys and shapes of kdrun's
ImageNet ResNets (same modules), so they load strictly, weights-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdrun import checkpoints, headline
from kdrun.errors import UserError

# kdrun ImageNet zoo name -> torchvision builder (same module layout, loaded strictly)
BUILDERS = {"ResNet18": "resnet18", "ResNet34": "resnet34", "ResNet50": "resnet50",
            "ResNet101": "resnet101", "ResNet152": "resnet152"}
DATASET, NUM_CLASSES = "imagenet", 1000


def _enum(arch: str, where: str) -> Any:
    if arch not in BUILDERS:
        raise UserError(f"{where}: torchvision has no pretrained weights for kdrun's {arch!r}; "
                        f"available for {', '.join(BUILDERS)}")
    from torchvision.models import get_model_weights

    return get_model_weights(BUILDERS[arch])


def choices(arch: str) -> list[str]:
    """Valid values of `torchvision:` for `arch` (its enum members, then DEFAULT)."""
    return list(_enum(arch, "torchvision")._member_names_) + ["DEFAULT"]


def resolve(arch: str, value: Any, where: str = "torchvision") -> dict[str, Any]:
    """What a job records for `arch`'s weights `value` (e.g. IMAGENET1K_V1 or DEFAULT)."""
    enum = _enum(arch, where)
    names = choices(arch)
    if not isinstance(value, str) or value not in names:
        raise UserError(f"{where}: {value!r} is not a weights value of torchvision's "
                        f"{enum.__name__}; valid: {', '.join(names)}")
    w = enum[value]  # DEFAULT is an alias: its name is the member it stands for
    url = w.url
    file = url.rsplit("/", 1)[1]
    metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return {"arch": arch, "torchvision": f"{enum.__name__}.{w.name}", "url": url, "file": file,
            "hash_prefix": _hash_prefix(file), "published_top1": metrics.get("acc@1"),
            "published_top5": metrics.get("acc@5")}


def _hash_prefix(file: str) -> str:
    from torch.hub import HASH_REGEX

    m = HASH_REGEX.search(file)
    return m.group(1) if m else ""


def hub_dir() -> Path:
    """torch.hub's checkpoint cache: $TORCH_HOME/hub/checkpoints (read at call time)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def path_of(info: dict[str, Any]) -> Path:
    return hub_dir() / info["file"]


def fetch_command(info: dict[str, Any]) -> str:
    return f"kdrun teacher fetch {info['arch']} --weights {info['torchvision'].split('.')[-1]}"


def missing_message(info: dict[str, Any]) -> str:
    p = path_of(info)
    home = os.environ.get("TORCH_HOME")
    where = f"TORCH_HOME={home}" if home else "torch's hub cache; set TORCH_HOME to move it"
    return (f"torchvision weights {info['torchvision']} not found: put {info['file']} from "
            f"{info['url']} at {p} ({where}), or run `{fetch_command(info)}` "
            "(or a worker with --download) where the network is reachable")


def verify(path: Path, info: dict[str, Any]) -> str:
    """The file's sha256, checked against the prefix torchvision publishes in its name."""
    digest = checkpoints.sha256(path)
    if not digest.startswith(info["hash_prefix"]):
        raise UserError(f"torchvision weights {path} are corrupt: sha256 {digest[:12]} does not "
                        f"start with torchvision's {info['hash_prefix']}; delete the file and "
                        f"fetch it again from {info['url']}")
    return digest


def fetch(info: dict[str, Any], progress: bool = True) -> Path:
    """Download the weights into the hub cache (torch.hub checks the sha256 prefix)."""
    import torch.hub

    p = path_of(info)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(info["url"], str(p), hash_prefix=info["hash_prefix"],
                                       progress=progress)
    except Exception as e:  # network, disk or hash: say what to do instead
        reason = headline.reason(e)
        raise UserError(f"downloading {info['url']} failed ({reason}); "
                        + missing_message(info).split(": ", 1)[1]) from None
    return p


def locate(info: dict[str, Any], download: bool = False) -> tuple[Path, str]:
    """(path, sha256) of the verified weights file, downloading it first when allowed."""
    p = path_of(info)
    if not p.is_file():
        if not download:
            raise UserError(missing_message(info))
        fetch(info, progress=False)
    return p, verify(p, info)
