#!/usr/bin/env bash
# Rebuild reports/reference/ from real runs, tuned with an equal budget (`nlbench tune`): every strategy
# gets BUDGET trials on 10% of each experience's training data held out for validation (tuning seed 0),
# then its chosen configuration runs on the test seeds SEEDS, and the report opens with the paired
# Verdicts (each Nested Learning method vs its controls, Lookahead/AdEMAMix and Adam).
# Settings: split-digits (embedded), split-fmnist class- and task-incremental (real Fashion-MNIST, e.g.
# Debian's dataset-fashion-mnist), and permuted-fmnist when this nlbench has it.
# Finished runs (trials included) are reused, so an interrupted build resumes with the same command.
# Sizes: BUDGET=8 SEEDS=1-5 (the minimum for the Verdicts); JOBS runs at once. Override any of them:
#   BUDGET=4 SEEDS=1-3 bash reports/make_reference.sh     # a quicker, less conclusive build
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/reference}
budget=${BUDGET:-8}
seeds=${SEEDS:-1-5}
jobs=${JOBS:-2}
export OMP_NUM_THREADS=1  # two single-threaded jobs use 2 cores better than one two-threaded job

nl="cms,clocked-adam,nested-adam,deep-l2gd,nl-memory,dmgd"
controls="cms-sync,cms-frozen,clocked-adam-sync,lookahead,ademamix"
baselines="adam,sgd,ewc,si,lwf,replay,der"
composed="cms+replay,cms-sync+replay"

tune() {  # tune SUITE [more nlbench tune options...]
    nlbench tune --suite "$1" --budget "$budget" --seeds "$seeds" --tune-seed 0 --out "$out" --jobs "$jobs" \
        --device cpu "${@:2}"
}

tune split-digits --strategy "$nl,hope,$controls,$baselines,$composed"
tune split-fmnist --strategy "$nl,$controls,$baselines,$composed"
# der is class- and domain-incremental only; the task-incremental setting has one head per task
tune split-fmnist --scenario task --head multi --strategy "$nl,$controls,${baselines/,der/}"
if nlbench list 2>/dev/null | grep -q "permuted-fmnist"; then
    tune permuted-fmnist --strategy "$nl,$controls,$baselines"
fi
nlbench report "$out" --out reports/reference
