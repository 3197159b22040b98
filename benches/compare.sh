#!/usr/bin/env bash
# Times burn's wgpu backend, kiln on the GPU, kiln on the CPU and burn's ndarray backend
# back to back on this machine, and writes the raw results and the Markdown tables that
# docs/BENCHMARKS.md quotes into docs/benchmarks/. Run from the repository root.
set -euo pipefail
peer=${PEER_DIR:-../shared/peers/burn-wgpu}
out=docs/benchmarks
mkdir -p "$out"
CARGO_TARGET_DIR=/tmp/peer-burn cargo build --release --manifest-path "$peer/Cargo.toml"
cargo build --release -p kiln-cli
burn=/tmp/peer-burn/release/peer-burn-wgpu
kiln=target/release/kiln
"$burn" wgpu > "$out/burn-wgpu.txt"
"$kiln" bench --device gpu --json "$out/kiln-gpu.json"
"$kiln" bench --device cpu --json "$out/kiln-cpu.json"
"$burn" ndarray > "$out/burn-ndarray.txt"
"$kiln" bench-report --kiln "$out/kiln-gpu.json" --kiln "$out/kiln-cpu.json" \
    --peer "$out/burn-wgpu.txt" --peer "$out/burn-ndarray.txt" > "$out/tables.md"
echo "wrote $out/tables.md"
