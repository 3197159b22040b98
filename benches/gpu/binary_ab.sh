#!/usr/bin/env bash
# Two kiln commands back to back on the GPU kiln opens: `kiln bench --only FAMILIES`
# (each case's median time) and `kiln profile MODEL` (training steps per second,
# dispatches and bytes per step), in interleaved rounds (A, B, A, B, ...) so that drift
# in the machine hits both alike. A and B are two builds, or one build under two
# settings (`A="env KILN_FUSION=1 .devbin/kiln" B="env KILN_FUSION=0 .devbin/kiln"`);
# they are split into words, so their paths hold no spaces. ONLY= (empty) skips the
# bench, MODELS= (empty) the training. Writes one file, $OUT/ab.md: medians per
# command, the ratio (above 1: B is faster), then the raw outputs.
#
#   OUT=dir A=.devbin/kiln-prev B=.devbin/kiln [ROUNDS=3] [SCALE=--large, or empty]
#     [ONLY=softmax,reduce,norm,transfer] [MODELS="transformer cnn"] [STEPS=30]
#     [WARMUP=3] bash benches/gpu/binary_ab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:?set OUT to a folder for the results}
a=${A:?set A to the first kiln command}
b=${B:?set B to the second kiln command}
rounds=${ROUNDS:-3}
scale=${SCALE---large}
only=${ONLY-softmax,reduce,norm,transfer}
models=${MODELS-transformer cnn}
steps=${STEPS:-30}
warmup=${WARMUP:-3}
mkdir -p "$out"
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

source benches/median.sh

for r in $(seq "$rounds"); do
    for which in a b; do
        kiln=$([ "$which" = a ] && echo "$a" || echo "$b")
        if [[ -n $only ]]; then
            # shellcheck disable=SC2086 # the command is split into words on purpose
            timeout 300 $kiln bench --device gpu $scale --only "$only" > "$raw/bench-$which-$r.txt" 2>&1 ||
                echo "failed: exit $?" >> "$raw/bench-$which-$r.txt"
        fi
        for model in $models; do
            # shellcheck disable=SC2086
            timeout 300 $kiln profile "$model" --device gpu --steps "$steps" --warmup "$warmup" \
                > "$raw/$model-$which-$r.txt" 2>&1 || echo "failed: exit $?" >> "$raw/$model-$which-$r.txt"
        done
    done
done

# A bench line: `family  case words  0.123 ms [lo-hi]  rate unit ...`; the case is
# everything between the family and the time.
case_times() {
    awk '/ ms \[/ { for (i = 2; $(i + 1) != "ms"; i++) {} ; name = $2; for (j = 3; j < i; j++) name = name " " $j; print name "\t" $i }' "$@"
}

summary="$out/ab.md"
{
    echo "# kiln A/B on one GPU ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "A: \`$a\`, B: \`$b\`; $rounds interleaved rounds; \`kiln bench --device gpu $scale --only ${only:-(skipped)}\`"
    echo "and \`kiln profile MODEL --device gpu --steps $steps --warmup $warmup\` for ${models:-no model}."
    echo
    echo "| case | A median | B median | A/B |"
    echo "| --- | ---: | ---: | ---: |"
    if [[ -n $only ]]; then
        case_times "$raw"/bench-a-1.txt | cut -f1 | while IFS= read -r name; do
            ma=$(cat "$raw"/bench-a-*.txt | case_times | awk -F'\t' -v n="$name" '$1 == n {print $2}' | median)
            mb=$(cat "$raw"/bench-b-*.txt | case_times | awk -F'\t' -v n="$name" '$1 == n {print $2}' | median)
            ratio=$(awk -v x="$ma" -v y="$mb" 'BEGIN {printf "%.2f", (y > 0 ? x / y : 0)}')
            echo "| $name | $ma ms | $mb ms | ${ratio}x |"
        done
    fi
    for model in $models; do
        rate() { grep -h "^steps per second" "$raw/$model-$1-"*.txt | awk '{print $NF}'; }
        per_step() { grep -h "^$2 per step" "$raw/$model-$1-$rounds.txt" | awk '{print $NF}'; }
        ra=$(rate a | median)
        rb=$(rate b | median)
        ratio=$(awk -v x="$ra" -v y="$rb" 'BEGIN {printf "%.2f", (x > 0 ? y / x : 0)}')
        echo "| $model steps/s ($(rate a | tr '\n' ' ')/ $(rate b | tr '\n' ' ')) | $ra | $rb | ${ratio}x (B/A) |"
        echo "| $model dispatches, bytes per step | $(per_step a dispatches), $(per_step a bytes) | $(per_step b dispatches), $(per_step b bytes) | |"
    done
    echo
    echo "## Raw outputs"
    for f in "$raw"/*.txt; do
        echo
        echo "### $(basename "$f")"
        echo '```'
        cat "$f"
        echo '```'
    done
} > "$summary"
sed -n '1,/^## Raw outputs/p' "$summary"
