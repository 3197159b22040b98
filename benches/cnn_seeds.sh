#!/usr/bin/env bash
# The CNN's test accuracy over many seeds, kiln against the PyTorch reproduction
# (../shared/peers/pytorch-cpu/cnn.py), at each dropout probability: is a gap between
# them chance, and does it go with dropout?
#
#   KILN=target/release/kiln [SEEDS="0 1 2 3 4 5 6 7 8 9"] [DROPOUT="0.25 0"] [JOBS=2] \
#   [PEERS=../shared/peers/pytorch-cpu] bash benches/cnn_seeds.sh
#
# Every run uses one thread, each framework its own initialisation and data stream from
# the seed; JOBS runs go at once (accuracy does not depend on the machine's load). Prints
# one line per run, then per framework and dropout the mean and sample standard
# deviation, and kiln's mean minus PyTorch's with Welch's t.
set -euo pipefail
KILN=${KILN:?KILN: the kiln binary}
SEEDS=${SEEDS:-0 1 2 3 4 5 6 7 8 9}
DROPOUT=${DROPOUT:-0.25 0}
JOBS=${JOBS:-2}
PEERS=$(realpath "${PEERS:-../shared/peers/pytorch-cpu}")
KILN=$(realpath "$KILN")
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} KILN_NUM_THREADS=1 PEERS KILN
work=$(mktemp -d)
export work

# One run: "framework dropout seed accuracy". PyTorch's model is the peer's, with its
# Dropout layer's probability replaced.
one() {
    local framework=$1 p=$2 seed=$3 log="$work/$1-$2-$3.log"
    if [ "$framework" = kiln ]; then
        "$KILN" train cnn --device cpu --seed "$seed" --dropout "$p" --out "$work/runs-$p-$seed" >"$log" 2>&1
    else
        python3 - "$p" "$seed" >"$log" 2>&1 <<'EOF'
import os, sys
sys.path.insert(0, os.environ["PEERS"])
import cnn
import torch.nn

p, seed = float(sys.argv[1]), sys.argv[2]
peer_dropout = torch.nn.Dropout
torch.nn.Dropout = lambda _p: peer_dropout(p)
sys.argv = ["cnn.py", "--seed", seed, "--threads", "1"]
cnn.main()
EOF
    fi
    echo "$framework $p $seed $(sed -nE 's/^test accuracy: ([0-9.]+).*/\1/p' "$log")"
}
export -f one

for seed in $SEEDS; do
    for p in $DROPOUT; do
        for framework in kiln pytorch; do echo "$framework $p $seed"; done
    done
done | xargs -P "$JOBS" -L 1 bash -c 'one "$@"' _ | tee "$work/results"

echo "logs: $work"
awk '
    { n[$1" "$2]++; s[$1" "$2] += $4; ss[$1" "$2] += $4 * $4; ps[$2] = 1 }
    END {
        for (p in ps) for (f = 0; f < 2; f++) {
            k = (f ? "pytorch" : "kiln") " " p
            if (!n[k]) continue
            m[k] = s[k] / n[k]
            v[k] = n[k] > 1 ? (ss[k] - n[k] * m[k] * m[k]) / (n[k] - 1) : 0
            printf "%-8s dropout %-5s runs %2d  mean %.4f  sd %.4f\n", (f ? "pytorch" : "kiln"), p, n[k], m[k], sqrt(v[k])
        }
        for (p in ps) {
            a = "kiln " p; b = "pytorch " p
            if (!n[a] || !n[b]) continue
            se = sqrt(v[a] / n[a] + v[b] / n[b])
            # In parentheses: a bare ">" among the printf arguments would redirect output.
            printf "dropout %-5s kiln - pytorch %+.4f  Welch t %.2f\n", p, m[a] - m[b], (se > 0 ? (m[a] - m[b]) / se : 0)
        }
    }' "$work/results"
