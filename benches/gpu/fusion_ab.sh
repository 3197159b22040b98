#!/usr/bin/env bash
# Training steps per second with elementwise fusion on and off, back to back, on the
# GPU kiln opens: `kiln profile MODEL` for each model, rounds interleaved (on, off, on,
# off, ...) so that drift in the machine hits both alike. Writes fusion.md (the table,
# medians and ratios) and the raw outputs to $OUT.
#
#   OUT=dir [KILN_BIN=target/release/kiln] [MODELS="transformer cnn"] [ROUNDS=3]
#     [STEPS=50] [WARMUP=5] bash benches/gpu/fusion_ab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:?set OUT to a folder for the results}
kiln=${KILN_BIN:-.devbin/kiln}
models=${MODELS:-transformer cnn}
rounds=${ROUNDS:-3}
steps=${STEPS:-50}
warmup=${WARMUP:-5}
mkdir -p "$out"
summary="$out/fusion.md"

median() { sort -g | awk '{a[NR]=$1} END {m=(NR+1)/2; print (NR%2 ? a[m] : (a[m-0.5]+a[m+0.5])/2)}'; }

{
    echo "# Fusion on vs off: training steps per second ($(date -u +%Y-%m-%d))"
    echo
    echo "\`kiln profile MODEL --device gpu --steps $steps --warmup $warmup\`, $rounds interleaved rounds."
    echo
    echo "| model | fusion | steps/s per round | median | dispatches/step | bytes/step |"
    echo "| --- | --- | --- | ---: | ---: | ---: |"
} > "$summary"
for model in $models; do
    for r in $(seq "$rounds"); do
        for fusion in 1 0; do
            log="$out/$model-fusion$fusion-round$r.txt"
            KILN_FUSION=$fusion timeout 300 "$kiln" profile "$model" --device gpu \
                --steps "$steps" --warmup "$warmup" > "$log" 2>&1 || echo "failed: see $log" >> "$log"
        done
    done
    declare -A med
    for fusion in 1 0; do
        rates=$(grep -h "^steps per second" "$out/$model-fusion$fusion-round"*.txt | awk '{print $NF}')
        med[$fusion]=$(echo "$rates" | median)
        last="$out/$model-fusion$fusion-round$rounds.txt"
        dispatches=$(grep "^dispatches per step" "$last" | awk '{print $NF}')
        bytes=$(grep "^bytes per step" "$last" | awk '{print $NF}')
        name=$([ "$fusion" = 1 ] && echo on || echo off)
        echo "| $model | $name | $(echo $rates | tr ' ' ',') | ${med[$fusion]} | $dispatches | $bytes |" >> "$summary"
    done
    ratio=$(awk -v a="${med[1]}" -v b="${med[0]}" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
    echo "| $model | on/off | | ${ratio}x | | |" >> "$summary"
    unset med
done
cat "$summary"
