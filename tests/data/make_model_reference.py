"""Regenerate model_reference.json.gz from the shared reference folder (a one-off, offline).

    python tests/data/make_model_reference.py /work/shared/reference

Keeps, per zoo and architecture: num_params, the state-dict keys with their shapes, and the
recorded logits rounded to 10 significant digits (the tests compare at 1e-6 relative).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("model_reference.json.gz")


def main(reference_dir: str) -> None:
    ref = Path(reference_dir)
    state_dicts = json.loads((ref / "model_state_dicts.json").read_text())
    logits = json.loads((ref / "model_logits.json").read_text())
    out: dict[str, dict[str, dict]] = {}
    for zoo, models in state_dicts.items():
        for name, entry in models.items():
            item = {"num_params": entry["num_params"], "state_dict": entry["state_dict"]}
            if name in logits.get(zoo, {}):
                item["logits"] = [[float(f"{v:.10g}") for v in row] for row in logits[zoo][name]]
            out.setdefault(zoo, {})[name] = item
    data = json.dumps(out, separators=(",", ":")).encode()
    OUT.write_bytes(gzip.compress(data, mtime=0))  # mtime=0: byte-identical on regeneration


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference")
