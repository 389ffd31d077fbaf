#!/usr/bin/env bash
# Reproduce: train the small grid (CPU) with TensorBoard and W&B (offline) logging, write the
# HTML report, screenshot it at 1280 px with headless Chromium, list the TensorBoard scalars.
# Usage: experiments/html-report/run.sh [WORK_DIR]   (from the repository root; needs the
# tensorboard and wandb extras, and Debian's `chromium` for the screenshot)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${1:-/tmp/html-report}"
KDRUN="${KDRUN:-.venv/bin/kdrun}"
K=("$KDRUN" --db "sqlite:///$WORK/kdrun.db" --runs-dir "$WORK/runs" --data-dir "$WORK/data")
export WANDB_MODE=offline WANDB_PROJECT=kdrun-html-demo
mkdir -p "$WORK"
"${K[@]}" enqueue --grid "$HERE/grid.yaml"
"${K[@]}" worker --cpu --until-empty
"${K[@]}" report --all --out "$HERE/report.html"
"${K[@]}" report --all --format markdown --out "$HERE/report.md"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --screenshot="$HERE/report-1280.png" --window-size=1280,2000 "file://$HERE/report.html"
"${K[@]}" show 3 > "$HERE/show-job-3.txt"
.venv/bin/python - "$WORK/runs" > "$HERE/tensorboard_scalars.txt" <<'PY'
import sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for logdir in sorted(Path(sys.argv[1]).glob("*/tensorboard"))[:3]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    print(f"# {logdir.parent.name}/tensorboard")
    for tag in acc.Tags()["scalars"]:
        pts = acc.Scalars(tag)
        print(f"{tag:22s} " + "  ".join(f"{e.step}:{e.value:.4g}" for e in pts))
    print()
PY
