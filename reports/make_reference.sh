#!/usr/bin/env bash
# Rebuild reports/reference/ from real runs: split-digits (every strategy, 3 seeds; embedded data)
# and split-fmnist (16 strategies, 2 seeds; real Fashion-MNIST, e.g. Debian's dataset-fashion-mnist).
# About 20 minutes on 2 CPU cores. Finished runs are reused, so an interrupted build resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/reference
export OMP_NUM_THREADS=1  # two single-threaded jobs use 2 cores better than one two-threaded job

nlbench sweep --suite split-digits --seeds 0,1,2 --name split-digits --out "$out" --jobs 2 --device cpu
nlbench sweep --suite split-fmnist --seeds 0,1 --name split-fmnist --out "$out" --jobs 2 --device cpu \
    --strategy adam,sgd,ewc,lwf,si,agem,replay,der,cumulative,deep-l2gd,nested-adam,nl-memory,dmgd,cms,cms+replay,deep-l2gd+replay
nlbench report "$out" --out reports/reference
