#!/usr/bin/env bash
# The same job on one process (2 threads) and as 2 gloo ranks (1 thread each), on this 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")"
K="../../.venv/bin/kdrun --db sqlite:///$PWD/work/kdrun.db --runs-dir $PWD/work/runs"
rm -rf work && mkdir work
$K enqueue --grid grid.yaml
$K worker --cpu --slots 2 --until-empty
$K status
$K report --table top1
$K show 3
