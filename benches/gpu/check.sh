#!/usr/bin/env bash
# One-shot device check: everything kiln measures on a GPU machine, in one command that
# writes its results under $OUT (at most 8 files, which the device tool brings back).
#
#   bash benches/gpu/check.sh            # on the GPU machine, binaries from .devbin/
#   bash benches/gpu/check.sh --local    # here, on the software adapter
#
# Parts: `kiln info`; the parity tests (every kernel against the CPU on this adapter);
# `kiln bench --device gpu --json` (with --large on a GPU); the matmul
# family once per variant, and the bandwidth-bound families again with wgpu's runtime
# bounds checks on every kernel (`KILN_BOUNDS_CHECKS=all`) and with the row kernels'
# lanes combined without subgroups (`KILN_SUBGROUPS=0`); conv2d unfolded and implicit
# (`KILN_CONV`); the fused attention kernels with whole rows and split into lanes
# (`KILN_ATTENTION_SPLIT`); burn's wgpu backend on
# the same adapter (../shared/peers/burn-wgpu, built with benches/gpu/prepare.sh); PyTorch
# on CUDA on the same shapes (benches/gpu/torch_cuda.py); training steps per second of
# kiln's CNN and transformer beside PyTorch's, and again with each setting above and
# with the transformer's attention fused and composed (`KILN_ATTENTION`), whole and
# split (`KILN_ATTENTION_SPLIT`; by default the autotuner chooses per shape class), and
# with each small pending product in a launch of its own (`KILN_MATMUL_GROUPS=0`); and,
# where prepare.sh built one, the build
# last measured against this one in interleaved rounds (benches/gpu/binary_ab.sh;
# `--local` runs the script with this build on both sides). `--local` skips the PyTorch parts (and
# says so in the summary) and runs the smaller suite; CI runs it so the script cannot rot.
# A part that fails is recorded in the summary and the others still run; the exit status
# is the number of failed parts. The parts share a time budget (CHECK_BUDGET, below), so
# that the summary is written within the device tool's limit on one command.
set -uo pipefail
cd "$(dirname "$0")/../.."

local_mode=false
if [[ ${1:-} == --local ]]; then
    local_mode=true
elif [[ $# -gt 0 ]]; then
    echo "usage: bash benches/gpu/check.sh [--local]" >&2
    exit 2
fi

out=${OUT:-target/gpu-check}
mkdir -p "$out"
if $local_mode; then
    kiln=${KILN_BIN:-target/release/kiln}
    prev=$kiln
    burn=${BURN_BIN:-/tmp/peer-burn/release/peer-burn-wgpu}
    parity=${PARITY_BIN:-/nonexistent}
    parity_filter=(row_kernels_match_cpu_both_ways)
    size=--quick
    steps=1
    warmup=1
else
    kiln=${KILN_BIN:-.devbin/kiln}
    prev=${PREV_BIN:-.devbin/kiln-prev}
    burn=${BURN_BIN:-.devbin/peer-burn-wgpu}
    parity=${PARITY_BIN:-.devbin/parity}
    parity_filter=()
    size=--large
    # As many warm-up steps as torch_cuda.py takes: the first steps compile pipelines and
    # tune the matmul shapes, which 3 warm-up steps left inside the timed ones.
    steps=50
    warmup=10
fi
log=$out/check.log
summary=$out/summary.md
# Parts only the summary shows stay out of $OUT, which brings back 8 files at most.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The autotuner starts from nothing, and its decisions are shown at the end.
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$scratch/cache}
: > "$log"
failed=0
status_lines=()

# The measuring parts share a budget (CHECK_BUDGET seconds: 450 on the GPU machine, whose
# device tool stops a command at 600, so the summary is always written; an hour with
# --local): a part gets what is left of it, and once it is spent the rest are skipped
# and marked. The summary's own parts run after it.
budget=${CHECK_BUDGET:-$($local_mode && echo 3600 || echo 450)}
deadline=$((SECONDS + budget))

# part NAME SECONDS COMMAND...: runs COMMAND with a time limit (within the budget); see
# run_part.
part() {
    local name=$1 limit=$2
    local left=$((deadline - SECONDS))
    if ((left < 5)); then
        skip "$name" "the check's budget of $budget s was spent (CHECK_BUDGET)"
        return 0
    fi
    ((limit > left)) && limit=$left
    shift 2
    run_part "$name" "$limit" "$@"
}

# run_part NAME SECONDS COMMAND...: runs COMMAND with a time limit, its output appended
# to the log, and records whether it passed.
run_part() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >> "$log"
    local start=$SECONDS
    timeout "$limit" "$@" >> "$log" 2>&1
    local rc=$?
    local took=$((SECONDS - start))
    if [[ $rc -eq 0 ]]; then
        status_lines+=("- $name: ok (${took} s)")
    else
        status_lines+=("- $name: FAILED, exit $rc after ${took} s (see check.log)")
        failed=$((failed + 1))
    fi
    echo "== $name: exit $rc in ${took} s" >> "$log"
    return 0
}

skip() {
    status_lines+=("- $1: skipped ($2)")
    echo "== $1: skipped ($2)" >> "$log"
}

part "kiln info" 60 bash -c "\"$kiln\" info > \"$scratch/info.txt\""
# Every kernel against the CPU reference on this adapter (tests/parity.rs); with
# --local only the row kernels' test (CI runs the whole suite itself), so that the part
# cannot rot.
if [[ -x $parity ]]; then
    part "parity tests on this adapter" 300 "$parity" "${parity_filter[@]}"
else
    skip "parity tests on this adapter" "no binary at $parity (benches/gpu/prepare.sh builds it; PARITY_BIN names another)"
fi
part "kiln bench" 240 "$kiln" bench --device gpu $size --json "$out/kiln-gpu.json"

# Each matmul variant on the same cases, then the default with every bounds check on.
variants=$out/matmul-variants.txt
: > "$variants"
for v in tiled small-tiled split-k blocked uniform-lhs by-size; do
    part "matmul $v" 120 bash -c "echo '# KILN_MATMUL=$v' >> \"$variants\"; \
        KILN_MATMUL=$v \"$kiln\" bench --device gpu $size --only matmul >> \"$variants\""
done
part "bounds checks on" 120 bash -c "echo '# KILN_BOUNDS_CHECKS=all (default variant)' >> \"$variants\"; \
    KILN_BOUNDS_CHECKS=all \"$kiln\" bench --device gpu $size --only matmul,softmax,reduce,norm >> \"$variants\""
# The row kernels with their lanes combined through workgroup memory, then as the
# adapter's default (subgroups where it passed the check), back to back.
for rows in KILN_SUBGROUPS=0 KILN_SUBGROUPS=1; do
    part "row kernels, $rows" 120 bash -c "echo '# $rows' >> \"$variants\"; \
        $rows \"$kiln\" bench --device gpu $size --only softmax,reduce,norm >> \"$variants\""
done

# Convolutions unfolded then multiplied, then with the columns read in place, back to
# back (the default times both per shape class).
for conv in unfold implicit; do
    part "conv2d KILN_CONV=$conv" 120 bash -c "echo '# KILN_CONV=$conv' >> \"$variants\"; \
        KILN_CONV=$conv \"$kiln\" bench --device gpu $size --only conv2d >> \"$variants\""
done

# The fused attention kernels with whole rows, then split into lanes, back to back
# (the default times both per kernel and shape class).
for split in whole split; do
    part "attention KILN_ATTENTION_SPLIT=$split" 120 bash -c "echo '# KILN_ATTENTION_SPLIT=$split' >> \"$variants\"; \
        KILN_ATTENTION_SPLIT=$split \"$kiln\" bench --device gpu $size --only attention >> \"$variants\""
done

if [[ -x $burn ]]; then
    part "burn-wgpu" 180 bash -c "\"$burn\" wgpu > \"$out/burn-wgpu.txt\""
else
    skip "burn-wgpu" "no binary at $burn (benches/gpu/prepare.sh builds it)"
fi

torch_ok=false
if $local_mode; then
    skip "pytorch-cuda kernels and training" "--local: no CUDA here"
elif python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>> "$log"; then
    part "pytorch-cuda" 240 bash -c "python3 benches/gpu/torch_cuda.py --large > \"$out/torch-cuda.txt\""
    torch_ok=true
else
    skip "pytorch-cuda kernels and training" "python3 has no torch with CUDA"
fi

# Training steps per second: kiln's built-in models, default variants (the LSTM and the
# GAN for their launches per step, which have no PyTorch figure beside them; the GAN's
# strided transposed convolutions run by phases or unfolded, as tuned); then with the
# other settings (the GAN with each way of convolving).
training=$out/training.txt
: > "$training"
# Each model's whole profile, its kernels' GPU time a step included, goes to the log
# (appended through stderr: a plain tee would truncate it); its figures to training.txt.
for model in cnn transformer lstm gru gan; do
    part "kiln train step $model" 240 bash -c "set -o pipefail; echo '# kiln profile $model' >> \"$training\"; \
        \"$kiln\" profile $model --device gpu --steps $steps --warmup $warmup | tee -a /dev/stderr | grep -E '^(GPU time|steps per second|host CPU|submissions|bind groups|peak memory|dispatches|bytes per step)' >> \"$training\""
done
# A clipped step (the norm and its coefficient on the device, no sync point).
part "kiln train step transformer, clipped" 240 bash -c "set -o pipefail; echo '# kiln profile transformer --clip-grad-norm 1' >> \"$training\"; \
    \"$kiln\" profile transformer --clip-grad-norm 1 --device gpu --steps $steps --warmup $warmup | grep -E '^(GPU time|steps per second|host CPU|submissions|readbacks|bind groups|peak memory|dispatches|bytes per step)' >> \"$training\""
if ! $local_mode; then
    for setting in KILN_MATMUL=blocked KILN_MATMUL_GROUPS=0 KILN_BOUNDS_CHECKS=all KILN_SUBGROUPS=0 KILN_CONV=unfold KILN_CONV=implicit KILN_ATTENTION=fused KILN_ATTENTION=composed KILN_ATTENTION_SPLIT=whole KILN_ATTENTION_SPLIT=split; do
        for model in cnn transformer gan; do
            # The transformer has no convolution, the CNN no attention; the GAN is here
            # for its convolutions.
            [[ $setting == KILN_CONV=* && $model == transformer ]] && continue
            [[ $setting == KILN_ATTENTION* && $model == cnn ]] && continue
            [[ $setting != KILN_CONV=* && $model == gan ]] && continue
            part "kiln train step $model, $setting" 240 bash -c \
                "set -o pipefail; echo '# $setting kiln profile $model' >> \"$training\"; \
                $setting \"$kiln\" profile $model --device gpu --steps $steps --warmup $warmup | grep -E '^(GPU time|steps per second|host CPU|submissions|bind groups|peak memory|dispatches|bytes per step)' >> \"$training\""
        done
    done
fi
if $torch_ok; then
    grep '^pytorch-cuda train' "$out/torch-cuda.txt" >> "$training"
fi

# The build last measured against this one, back to back: what changed since, on
# this card (ab.md). Here, this build on both sides, so that the script cannot rot.
if [[ -x $prev ]]; then
    if $local_mode; then
        ab=(ROUNDS=1 SCALE=--quick ONLY=softmax MODELS=mlp STEPS=1 WARMUP=1)
    else
        ab=(ROUNDS=3 SCALE=--large ONLY=matmul,conv2d,softmax,reduce,norm "MODELS=transformer cnn")
    fi
    part "A/B against $prev" 300 env OUT="$scratch/ab" A="$prev" B="$kiln" "${ab[@]}" \
        bash benches/gpu/binary_ab.sh
    cp "$scratch/ab/ab.md" "$out/ab.md" 2>> "$log"
else
    skip "A/B against the build before" "no binary at $prev (benches/gpu/prepare.sh builds it)"
fi

peers=()
for f in "$out/burn-wgpu.txt" "$out/torch-cuda.txt"; do
    [[ -s $f ]] && peers+=(--peer "$f")
done
run_part "autotune decisions" 60 bash -c "\"$kiln\" info | sed -n '/autotune cache/,/kiln would use/p' > \"$scratch/autotune.txt\""
if [[ -s $out/kiln-gpu.json ]]; then
    run_part "report" 60 bash -c "\"$kiln\" bench-report --kiln \"$out/kiln-gpu.json\" ${peers[*]} > \"$scratch/tables.md\""
else
    skip "report" "no kiln bench results to report"
fi

{
    echo "# kiln device check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    if $local_mode; then
        echo "Mode: --local (software adapter; PyTorch parts skipped, smaller suite)."
    else
        echo "Mode: GPU machine."
    fi
    echo "The check took $SECONDS s; its measuring parts had a budget of $budget s."
    echo
    echo "## Parts"
    printf '%s\n' "${status_lines[@]}"
    echo
    echo "## Adapter"
    echo '```'
    cat "$scratch/info.txt" 2>/dev/null
    echo '```'
    echo
    echo "## The autotuner's decisions in this run"
    echo '```'
    cat "$scratch/autotune.txt" 2>/dev/null
    echo '```'
    echo
    echo "## Training steps per second"
    echo '```'
    cat "$training"
    echo '```'
    echo
    cat "$scratch/tables.md" 2>/dev/null
} > "$summary"
echo "wrote $out (summary.md; $failed failed parts)"
exit "$failed"
