#!/usr/bin/env bash
# The CPU backend against PyTorch (and, optionally, against another kiln build), in
# interleaved rounds on this machine: the CNN's epoch time and the char transformer's
# steps per minute, at each thread count.
#
#   B=target/release/kiln [A=/tmp/kiln-before] [ROUNDS=2] [THREADS="1 2"] [EPOCHS=2] \
#   [MINUTES=0.5] [PEERS=../shared/peers/pytorch-cpu] bash benches/cpu_ab.sh
#
# Each round runs every program once per thread count, one after another, so that a
# change in the machine's load reaches all of them. Prints each run's figures, then the
# median of the rounds and kiln's speed as a share of PyTorch's (above 1: kiln is faster).
set -euo pipefail
B=${B:?B: the kiln binary to measure}
A=${A:-}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-1 2}
EPOCHS=${EPOCHS:-2}
MINUTES=${MINUTES:-0.5}
PEERS=${PEERS:-../shared/peers/pytorch-cpu}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
work=$(mktemp -d)
results="$work/results"

source "$(dirname "$0")/median.sh"
# Epoch lines end "N steps  S.SSs" in kiln and "N steps  S.Ss" in the PyTorch
# reproductions, which close with the same median to the millisecond: that line is
# taken where it is there, since 0.1 s is a fifth of a CNN epoch on a fast machine.
cnn_seconds() { # median epoch seconds
    local log summary
    log=$(cat)
    summary=$(sed -nE 's/.*median epoch ([0-9.]+)s.*/\1/p' <<<"$log")
    if [ -n "$summary" ]; then echo "$summary"; return; fi
    sed -nE 's/^epoch .* ([0-9]+) steps +([0-9.]+)s.*/\2/p' <<<"$log" | median
}
lm_steps_per_minute() {
    sed -nE 's/^epoch .* ([0-9]+) steps +([0-9.]+)s.*/\1/p' | awk -v m="$MINUTES" '{s += $1} END {printf "%.0f\n", s / m}'
}

run() { # name threads work command...
    local name=$1 threads=$2 work_kind=$3
    shift 3
    local log="$work/$name-$threads-$work_kind.log"
    KILN_NUM_THREADS=$threads "$@" >"$log" 2>&1
    local figure
    if [ "$work_kind" = cnn ]; then figure=$(cnn_seconds <"$log"); else figure=$(lm_steps_per_minute <"$log"); fi
    echo "$name $threads $work_kind $figure" | tee -a "$results"
}

for round in $(seq "$ROUNDS"); do
    echo "== round $round"
    for t in $THREADS; do
        [ -n "$A" ] && run kiln-A "$t" cnn "$A" train cnn --device cpu --epochs "$EPOCHS" --out "$work/a"
        run kiln-B "$t" cnn "$B" train cnn --device cpu --epochs "$EPOCHS" --out "$work/b"
        run pytorch "$t" cnn python3 "$PEERS/cnn.py" --epochs "$EPOCHS" --threads "$t"
        [ -n "$A" ] && run kiln-A "$t" lm "$A" train transformer --device cpu --minutes "$MINUTES" --out "$work/a"
        run kiln-B "$t" lm "$B" train transformer --device cpu --minutes "$MINUTES" --out "$work/b"
        run pytorch "$t" lm python3 "$PEERS/char_gpt.py" --minutes "$MINUTES" --threads "$t"
    done
done

echo "== medians over $ROUNDS rounds (CNN: epoch seconds; lm: transformer steps per minute)"
for t in $THREADS; do
    for w in cnn lm; do
        line="threads $t $w:"
        torch=$(awk -v t="$t" -v w="$w" '$1 == "pytorch" && $2 == t && $3 == w {print $4}' "$results" | median)
        for name in kiln-A kiln-B pytorch; do
            m=$(awk -v n="$name" -v t="$t" -v w="$w" '$1 == n && $2 == t && $3 == w {print $4}' "$results" | median)
            [ -z "$m" ] && continue
            if [ "$name" = pytorch ]; then
                line+=" $name $m"
            elif [ "$w" = cnn ]; then
                line+=" $name $m (speed vs PyTorch $(awk -v a="$torch" -v b="$m" 'BEGIN {printf "%.2f", a / b}'))"
            else
                line+=" $name $m (speed vs PyTorch $(awk -v a="$torch" -v b="$m" 'BEGIN {printf "%.2f", b / a}'))"
            fi
        done
        echo "$line"
    done
done
echo "logs: $work"
