#!/usr/bin/env bash
# Reproduce this study: train (CPU), then export the results and write the reports here.
# Usage: experiments/diminishing-synthetic/run.sh [WORK_DIR]   (run from the repository root)
# WORK_DIR holds the database and checkpoints (default /tmp/diminishing-synthetic); if it
# already has a finished run, only the export and reports are redone.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${1:-/tmp/diminishing-synthetic}"
KDRUN="${KDRUN:-.venv/bin/kdrun}"
K=("$KDRUN" --db "sqlite:///$WORK/kdrun.db" --runs-dir "$WORK/runs" --data-dir "$WORK/data")
mkdir -p "$WORK"
"${K[@]}" enqueue --grid "$HERE/grid.yaml"
"${K[@]}" worker --cpu --until-empty
"${K[@]}" export --format csv --out "$HERE/results"
"${K[@]}" export --format json --out "$HERE/results/results.json"
{
  for t in top1 delta diminishing agreement curves; do
    "${K[@]}" report --table "$t" --format markdown
    echo
  done
} > "$HERE/report.md"
"${K[@]}" report --table diminishing --format latex --out "$HERE/diminishing.tex"
"${K[@]}" report --table diminishing --format csv --plot "$HERE/diminishing.png" \
  --out "$HERE/diminishing.csv"
"${K[@]}" report --table delta --format csv --plot "$HERE/delta.png" --out "$HERE/delta.csv"
"${K[@]}" report --table curves --format csv --plot "$HERE/curves.png" --out "$HERE/curves.csv"
