#!/usr/bin/env bash
# The CPU record of the fast path (issue 7): throughput with the device defaults and with every
# CPU-capable switch on, packing, and the accuracy check. Run from the repository root on a
# quiet machine (other processes slow single steps down); about 20 minutes on 2 cores.
set -euo pipefail
out=experiments/fast-path-cpu
py=.venv/bin/python
$py benchmarks/train_throughput.py --device cpu --steps 10 --json $out/throughput_defaults.json \
    | tee $out/throughput_defaults.txt
$py benchmarks/train_throughput.py --device cpu --steps 10 --amp bf16 --channels-last on \
    --pack 1,2 --json $out/throughput_switches_on.json | tee $out/throughput_switches_on.txt
$py benchmarks/train_throughput.py --device cpu --steps 10 --warmup 3 --amp bf16 \
    --channels-last on --compile on --pairs resnet32x4:resnet8x4 | tee $out/throughput_compile_on.txt
$py benchmarks/fast_accuracy.py --device cpu 2>&1 | tee $out/fast_accuracy.txt
