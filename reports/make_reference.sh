#!/usr/bin/env bash
# Rebuild reports/reference/ from real runs, in regime: streams long enough that every clock level ticks.
#
#   bash reports/make_reference.sh                 # every stage in order (resumable; see the times below)
#   STAGE=tune bash reports/make_reference.sh      # one stage: unpack, tune, periods, grid, secondary, bigram,
#                                                  #   bigram-hope, bigram-periods, published, cost, report, pack
#   QUICK=1 bash reports/make_reference.sh         # a smoke-sized build: every stage, tiny sizes, into
#                                                  #   results/reference-quick and reports/reference-quick
#
# Stages, with the wall time each took in a build from an empty OUT on an idle 2-core machine at two jobs
# (2026-12-07; reports/reference/build-times.tsv has the load; about 7.3 core-hours in all):
#   unpack     restore this build's committed raw runs ($REPORT/runs.tar.xz) into $OUT, so a fresh checkout
#              resumes the build or re-renders the report without training again (seconds);
#   tune       `nlbench tune` of every strategy in a verdict, controls included, with the same budget ($BUDGET
#              trials, each trained on 90% of every experience's training data and scored on the held-out
#              10%, tuning seed 0), at the default clock
#              (periods 1,8,64), on the primary setting; then the chosen configurations on the test seeds
#              $SEEDS (10: the primary family). permuted-fmnist and, with ROTATED=1, rotated-fmnist: 38 min;
#   periods    the clock-period axis: the slowest period at ~1/16, 1/4, 1 and 2 experience lengths
#              (relative periods 1,e/32,e/16 / 1,e/16,e/4 / 1,e/8,e / 1,e/4,2e) for cms and clocked-adam and
#              their sync controls (the frozen controls do not depend on the slow periods), each at its tuned
#              learning rate (tuned once at the default clock, then used along the axis), on seeds $AXIS_SEEDS
#              (8 min);
#   grid       periods x alpha for cms+deep-l2gd (both axes of a Nested Learning method): 3 period settings x
#              alpha in {0, 1e-4, 1e-3, 1e-2} at the tuned cms lr, $GRID_SEEDS seeds (9 min);
#   secondary  tuned (same budget), $SECONDARY_SEEDS seeds: split-digits, class-incremental split-fmnist as one
#              sanity row, task-incremental split-fmnist (31 min);
#   bigram     the bigram in-context mixture, tuned (same budget), $SECONDARY_SEEDS seeds: the nine strategies
#              other than hope's (about 36 min: 189 runs of ~25 s thread CPU, timed by `nlbench verify`);
#   bigram-hope  hope, hope-sync and hope-frozen in the same tune (about 52 min: 63 runs of ~107 s);
#   bigram-periods  hope's period axis on the bigram mixture with its sync control, at their tuned lr (about
#              36 min: 40 runs of ~107 s);
#   published  the published protocols: SFR 2024 (sfr2024) and Buzzega et al. 2020 (buzzega2020) (6.5 min);
#   cost       `nlbench cost` on the primary settings and the bigram mixture (isolated step time and state bytes;
#              the Answer's cost; 9 min, most of it the bigram mixture's first experience per strategy);
#   report     `nlbench report $OUT --out $REPORT --primary $PRIMARY_SETTINGS` (the primary Holm family's settings:
#              permuted-fmnist,rotated-fmnist, or permuted-fmnist alone when ROTATED=0; every other setting is
#              secondary; about 1 minute);
#   pack       the raw runs (spec.json, result.json, done, selection.json, cost.json; no checkpoints) into
#              $REPORT/runs.tar.xz, committed with the report.
# Every stage appends its wall time and the load average before and after to $REPORT/build-times.tsv.
# Finished runs (trials included) are reused, so an interrupted stage resumes with the same command.
#
# Sizes (every one overridable): PRIMARY_TASKS=10 tasks of PRIMARY_TRAIN=10000 training images of
# permuted-fmnist at batch 128 = 79 steps per experience, so the default slowest level (C=64) updates
# 1.2 times per experience and 12 times over the stream, and 2e (158 steps) 5 times; each task is
# evaluated on PRIMARY_TEST=2000 of its 10000 test images (a seeded subset, the same for every seed: the
# 10 x 11 evaluations of the full test sets would cost twice the training). ROTATED=1 (the default; 0 under
# QUICK=1) adds rotated-fmnist at the same sizes as the second primary setting (the verdict family and replay; lr range
# ROTATED_RANGE=lr=1e-7..3e-2). BUDGET=16, SEEDS=1-10, AXIS_SEEDS=1-5, GRID_SEEDS=1-5,
# SECONDARY_SEEDS=1-5, BIGRAM_STEPS=640 (steps per experience of the bigram mixture), JOBS=2 (a local Ray cluster when Ray is installed, else EXECUTOR=local; one torch thread per run), COST_REPEATS=9.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${QUICK:-0}
if [ "$quick" = 1 ]; then
    out=${OUT:-results/reference-quick}; report=${REPORT:-reports/reference-quick}
    budget=${BUDGET:-2}; seeds=${SEEDS:-1-2}; grid_seeds=${GRID_SEEDS:-1-2}; axis_seeds=${AXIS_SEEDS:-1-2}; secondary_seeds=${SECONDARY_SEEDS:-1-2}
    tasks=${PRIMARY_TASKS:-4}; train=${PRIMARY_TRAIN:-3200}; batch=${PRIMARY_BATCH:-32}; test=${PRIMARY_TEST:-1000}
    bigram_steps=${BIGRAM_STEPS:-64}
else
    out=${OUT:-results/reference}; report=${REPORT:-reports/reference}
    budget=${BUDGET:-16}; seeds=${SEEDS:-1-10}; grid_seeds=${GRID_SEEDS:-1-5}; axis_seeds=${AXIS_SEEDS:-1-5}; secondary_seeds=${SECONDARY_SEEDS:-1-5}
    tasks=${PRIMARY_TASKS:-10}; train=${PRIMARY_TRAIN:-10000}; batch=${PRIMARY_BATCH:-128}; test=${PRIMARY_TEST:-2000}
    bigram_steps=${BIGRAM_STEPS:-640}
fi
if [ "$quick" = 1 ]; then rotated_on=${ROTATED:-0}; else rotated_on=${ROTATED:-1}; fi
if [ "$rotated_on" = 1 ]; then primary_settings=${PRIMARY_SETTINGS:-permuted-fmnist,rotated-fmnist}
else primary_settings=${PRIMARY_SETTINGS:-permuted-fmnist}; fi
jobs=${JOBS:-2}
cost_repeats=${COST_REPEATS:-9}  # nlbench cost rounds (50 timed steps per strategy each, interleaved)
stage=${STAGE:-all}
stages="unpack tune periods grid secondary bigram bigram-hope bigram-periods published cost report pack"
if [ "$stage" != all ] && [[ " $stages " != *" $stage "* ]]; then
    echo "make_reference.sh: unknown STAGE '$stage' (one of: all $stages)" >&2; exit 2
fi
# A local Ray cluster when Ray is installed (pip install -e ".[ray]"), else the local executor: the same runs
# (the same run_ids, one torch thread per run in both), scheduled differently.
if [ -n "${EXECUTOR:-}" ]; then executor=$EXECUTOR
elif python -c "import ray" 2>/dev/null; then executor=ray
else
    executor=local
    echo "make_reference.sh: Ray is not installed, so runs go through the local executor (EXECUTOR=local)" >&2
fi
export OMP_NUM_THREADS=1  # two single-threaded jobs use 2 cores better than one two-threaded job
mkdir -p "$out" "$report"

setting=(--suite-option "n_tasks=$tasks" --suite-option "train_per_task=$train" --suite-option "test_per_task=$test"
         --batch-size "$batch")
primary=(--suite permuted-fmnist "${setting[@]}")
rotated=(--suite rotated-fmnist "${setting[@]}")
clocked="cms,cms-sync,cms-frozen,clocked-adam,clocked-adam-sync"
references="adam,adam-matched,replay,lookahead,ademamix,cls-er"
if [ "$quick" = 1 ]; then references="adam,adam-matched,replay"; fi
period_axis=("1,e/32,e/16" "1,e/16,e/4" "1,e/8,e" "1,e/4,2e")

log_stage() {  # log_stage NAME SECONDS LOAD_BEFORE
    printf '%s\t%s\t%ss\tload %s -> %s\tquick=%s\n' "$1" "$(date -u +%FT%TZ)" "$2" "$3" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$quick" >> "$report/build-times.tsv"
}

run_stage() {  # run_stage NAME: runs stage_NAME when STAGE is all or NAME, and logs its time
    if [ "$stage" = all ] || [ "$stage" = "$1" ]; then
        local start load; start=$(date +%s); load=$(cut -d' ' -f1-3 /proc/loadavg)
        echo "== stage $1 ($(date -u +%T))" >&2
        "stage_${1//-/_}"
        log_stage "$1" "$(( $(date +%s) - start ))" "$load"
    fi
}

tune() {  # tune NAME [nlbench tune options...]
    nlbench tune --name "$1" --budget "$budget" --tune-seed 0 --out "$out" --jobs "$jobs" --executor "$executor" \
        --device cpu "${@:2}"
}

sweep() {  # sweep NAME [nlbench sweep options...]
    nlbench sweep --out "$out" --name "$1" --jobs "$jobs" --executor "$executor" --device cpu "${@:2}"
}

tuned() {  # tuned NAME STRATEGY: the chosen values of STRATEGY in OUT/NAME/selection.json as --grid flags
    python - "$out/$1/selection.json" "$2" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))["selections"]
chosen = next(e["chosen"] for e in entries if e["strategy"] == sys.argv[2])
for key, value in sorted(chosen.items()):
    if key != "periods":  # the period axis sets its own periods
        print(f"--grid {key}={','.join(map(str, value)) if isinstance(value, list) else value}")
EOF
}

stage_unpack() {
    # This build's own pack ($REPORT/runs.tar.xz): a QUICK=1 build must not pull the full reference's runs into its report.
    if [ -f "$report/runs.tar.xz" ]; then tar -xJf "$report/runs.tar.xz" -C "$out" --skip-old-files; fi
}

stage_tune() {
    tune primary-permuted "${primary[@]}" --seeds "$seeds" --strategy "$clocked,$references"
    # rotated-fmnist, the second primary setting: the verdict family (the clocked methods, their controls, adam
    # and the parameter-matched MLP) and replay as the reference point; ROTATED_STRATEGIES overrides it.
    if [ "$rotated_on" = 1 ]; then
        # Its lr range reaches 1e-7: at the shared floor (1e-5) every strategy but replay chose the floor, the
        # validation accuracy still rising as the lr fell (the 180-degree span of rotations punishes any step
        # that fits the current angle). Every strategy of this tune searches the same range.
        tune primary-rotated "${rotated[@]}" --seeds "$seeds" --strategy "${ROTATED_STRATEGIES:-$clocked,adam,adam-matched,replay}" \
            --range "${ROTATED_RANGE:-lr=1e-7..3e-2}"
    fi
}

axis_sweep() {  # axis_sweep TUNE_NAME SEEDS "STRATEGY ..." SETTING...: each strategy along the period axis,
    local strategy grid periods            # at the values it was tuned to in TUNE_NAME
    periods=$(IFS=:; echo "${period_axis[*]}")
    for strategy in $3; do
        grid=$(tuned "$1" "$strategy")
        # shellcheck disable=SC2086  # $grid holds several --grid flags
        sweep "periods-$strategy" "${@:4}" --strategy "$strategy" --grid "periods=$periods" $grid --seeds "$2"
    done
}

stage_periods() {
    # The frozen controls are left out: with the fastest period 1 in every axis setting they are the same run at
    # every periods (slow levels frozen, the fast one at period 1; checked bit-identical on ACC and every
    # accuracy), so the report pairs the axis with their default-clock runs.
    axis_sweep primary-permuted "$axis_seeds" "cms cms-sync clocked-adam clocked-adam-sync" "${primary[@]}"
}

stage_grid() {
    local grid periods; grid=$(tuned primary-permuted cms)
    periods=$(IFS=:; echo "${period_axis[*]:1}")  # the axis without its fastest setting
    # shellcheck disable=SC2086
    sweep grid-cms-deep-l2gd "${primary[@]}" --strategy cms+deep-l2gd --grid "periods=$periods" \
        --grid alpha=0,1e-4,1e-3,1e-2 $grid --seeds "$grid_seeds"
}

bigram=(--suite bigram-shift --suite-option regime=mixture --suite-option "steps=$bigram_steps")

stage_secondary() {
    local nl="cms,clocked-adam,nested-adam,deep-l2gd,nl-memory,dmgd,m3" base="adam,sgd,ewc,si,lwf,replay,cls-er"
    if [ "$quick" = 1 ]; then  # smoke: one secondary setting, a few strategies
        tune split-digits --suite split-digits --seeds "$secondary_seeds" --strategy "cms,cms-sync,adam,replay,cls-er"
        return
    fi
    tune split-digits --suite split-digits --seeds "$secondary_seeds" \
        --strategy "$nl,hope,$clocked,adam-matched,lookahead,ademamix,$base,der,cms+replay,cms-sync+replay"
    sweep split-fmnist-class --suite split-fmnist --strategy adam,cms,cms-sync,replay,der --seeds "$secondary_seeds"
    tune split-fmnist-task --suite split-fmnist --scenario task --head multi --seeds "$secondary_seeds" \
        --strategy "$nl,$clocked,lookahead,ademamix,$base"
}

# The bigram tune in two stages, each under an hour idle: hope's runs take ~107 s on one thread, the others' ~25 s.
# Both write into one tune (bigram-mixture): selection.json keeps one entry per strategy, and every strategy's
# study is seeded alone, so the split draws the same trials as one call.
stage_bigram() {
    if [ "$quick" = 1 ]; then  # smoke: hope and its controls on a short mixture
        tune bigram-mixture "${bigram[@]}" --seeds "$secondary_seeds" --strategy "hope,hope-sync,hope-frozen,adam"
        return
    fi
    tune bigram-mixture "${bigram[@]}" --seeds "$secondary_seeds" \
        --strategy "clocked-adam,cms,clocked-adam-sync,cms-sync,cms-frozen,lookahead,ademamix,adam,replay"
}

stage_bigram_hope() {
    if [ "$quick" = 1 ]; then return; fi  # stage bigram's smoke holds hope
    tune bigram-mixture "${bigram[@]}" --seeds "$secondary_seeds" --strategy "hope,hope-sync,hope-frozen"
}

stage_bigram_periods() {  # hope's period axis on the bigram mixture (640 steps per experience), at its tuned bigram lr
    axis_sweep bigram-mixture "$secondary_seeds" "hope hope-sync" "${bigram[@]}"  # hope-frozen: as in stage_periods
}

stage_published() {
    if [ "$quick" = 1 ]; then return; fi  # minutes per run at batch 10: not smoke-sized
    sweep sfr2024 --suite split-fmnist --protocol sfr2024 --strategy der,ewc,si --seeds 0-4
    sweep sfr2024 --suite split-fmnist --protocol sfr2024 --strategy der --grid mem_size=200 --seeds 0-4  # the appendix reading
    sweep buzzega2020 --suite split-fmnist --protocol buzzega2020 --strategy sgd,replay,agem \
        --grid mem_size=200,500 --grid patterns_per_exp=40,100 --seeds 0-2
}

stage_cost() {
    nlbench cost "${primary[@]}" --strategy "adam,adam-matched,$clocked,replay,cms+deep-l2gd,lookahead,ademamix,cls-er" --out "$out" \
        --name cost-primary-permuted --repeats "$cost_repeats"
    if [ "$rotated_on" = 1 ]; then  # the same networks on other pixels: measured, not assumed equal
        nlbench cost "${rotated[@]}" --strategy "adam,adam-matched,$clocked,replay" --out "$out" --name cost-primary-rotated \
            --repeats "$cost_repeats"
    fi
    # The bigram mixture's transformer and HOPE networks: the secondary verdicts' cost (hope is the dearest method).
    nlbench cost "${bigram[@]}" --strategy "adam,hope,hope-sync,hope-frozen,cms,cms-sync,cms-frozen,clocked-adam,clocked-adam-sync,lookahead,ademamix" \
        --out "$out" --name cost-bigram-mixture --repeats "$cost_repeats"
}

stage_report() {
    # The primary Holm family, declared here before any run: the two long domain-incremental streams. Every other
    # setting (split-digits, task-IL split-fmnist, the bigram mixture, the class-IL sanity row) is secondary.
    nlbench report "$out" --out "$report" --primary "$primary_settings"
}

stage_pack() {
    (cd "$out" && find . \( -name spec.json -o -name result.json -o -name done -o -name selection.json -o -name cost.json \) \
        -print0 | sort -z | tar --null -cJf - --files-from=-) > "$report/runs.tar.xz"
    du -h "$report/runs.tar.xz" >&2
}

for name in $stages; do
    run_stage "$name"
done
