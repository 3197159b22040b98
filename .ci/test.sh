#!/usr/bin/env bash
# kiln's test command: installs what the tests need, then runs every test.
# On a machine with no Vulkan driver it installs Mesa's software one (lavapipe), so
# the GPU tests run on the CPU; they never skip silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, through sudo unless root.
apt_install() {
    local sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

have_vulkan_icd() {
    compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null ||
        compgen -G "/usr/local/share/vulkan/icd.d/*.json" >/dev/null
}

if ! have_vulkan_icd; then
    echo "No Vulkan driver found: installing Mesa's lavapipe (mesa-vulkan-drivers)."
    apt_install mesa-vulkan-drivers
    # The GPU tests must then run on lavapipe, not silently elsewhere.
    export KILN_EXPECT_ADAPTER="${KILN_EXPECT_ADAPTER:-llvmpipe}"
fi
# kiln-dist (data-parallel training) builds against MPI, through bindgen (libclang), and
# its tests launch ranks with mpirun.
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null || ! compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null; then
    echo "Installing Open MPI and libclang for kiln-dist (openmpi-bin libopenmpi-dev libclang-dev)."
    apt_install openmpi-bin libopenmpi-dev libclang-dev
fi
# A one-shot run gains nothing from incremental caches, which were a quarter of the build
# directory; set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Mesa's GL loader complains without this; it is harmless but noisy.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The matmul autotuner's decisions go to a fresh directory, not the user's cache.
KILN_CACHE_DIR="${KILN_CACHE_DIR:-$(mktemp -d)}"
export KILN_CACHE_DIR

echo "== kiln info"
cargo run -q -p kiln-cli -- info
echo "== the GPU tests run on:"
KILN_DEVICE=gpu cargo run -q -p kiln-cli -- info | tail -n 1
echo "== kiln profile: one MLP step on the GPU ends with the machine-independent figures"
profile_tail=$(cargo run -q -p kiln-cli -- profile mlp --device gpu --steps 1 --warmup 1 | tail -n 3)
echo "$profile_tail"
grep -q "^peak memory held by tensors: [1-9][0-9]* bytes" <<<"$profile_tail"
grep -q "^dispatches per step: [0-9]" <<<"$profile_tail"
grep -q "^bytes per step: [0-9]" <<<"$profile_tail"
echo "== benches/gpu/check.sh --local: the device check's kiln parts, so it cannot rot"
cargo build -q -p kiln-cli
# Built as `cargo test --workspace` builds it, so that it is not built twice.
parity_bin=$(cargo test --workspace --test parity --no-run 2>&1 |
    sed -n 's|.*Executable .*(\(target/debug/deps/parity-[0-9a-f]*\)).*|\1|p' | tail -n 1)
check_out=$(mktemp -d)
OUT="$check_out" KILN_BIN=target/debug/kiln BURN_BIN=/nonexistent PARITY_BIN="$parity_bin" \
    bash benches/gpu/check.sh --local
grep '^- ' "$check_out/summary.md"
echo "== cargo test --workspace"
cargo test --workspace
echo "== random calls from four threads at once on one GPU"
KILN_API_THREADS=4 KILN_API_CALLS=500 cargo test -p kiln --test api_fuzz
echo "== the examples, with short settings"
example_out=$(KILN_EXAMPLE_EPOCHS=30 cargo run -q -p kiln-nn --example tabular)
tail -n 1 <<<"$example_out"
grep -q "^test accuracy: 0\.9" <<<"$example_out"
example_out=$(KILN_EXAMPLE_EPOCHS=1 cargo run -q -p kiln-nn --example mnist_cnn)
tail -n 1 <<<"$example_out"
grep -q "^resumed after epoch 1" <<<"$example_out"
grep -q "^test accuracy: 0\.9" <<<"$example_out"
example_out=$(KILN_EXAMPLE_STEPS=60 cargo run -q -p kiln-nn --example char_lm)
tail -n 1 <<<"$example_out"
# From uniform guessing (ln 65 = 4.17 nats) to below 3.
grep -q "^validation loss: 2\." <<<"$example_out"
example_out=$(KILN_EXAMPLE_STEPS=300 cargo run -q -p kiln-nn --example gan)
tail -n 1 <<<"$example_out"
# An untrained generator leaves about half the pixels above half brightness; the real
# digits about 13%. The samples must have learned the dark ground (within 0.1 of it).
awk '/^ink/ { found = 1; d = ($7 + 0) - ($10 + 0); ok = d < 0.1 && d > -0.1 }
     END { exit !(found && ok) }' <<<"$example_out"
echo "== the parity suite again with fusion off: each op's own kernel against the CPU"
KILN_FUSION=0 cargo test -p kiln --test parity
echo "== the NaN edges, integer ops and random calls on Mesa's GL (naga's GLSL output, no f16)"
# wgpu's GL backend opens llvmpipe through EGL; its Vulkan tests above cannot show where
# naga's GLSL leaves to the driver what WGSL defines (tanh of NaN, i32 division by 0).
if ! compgen -G "/usr/share/glvnd/egl_vendor.d/*mesa*.json" >/dev/null; then
    echo "Installing Mesa's EGL and GL drivers (libegl1 libegl-mesa0 libgl1-mesa-dri)."
    apt_install libegl1 libegl-mesa0 libgl1-mesa-dri
fi
gl_adapter=$(WGPU_BACKEND=gl KILN_DEVICE=gpu cargo run -q -p kiln-cli -- info | tail -n 1)
echo "$gl_adapter"
grep -q "llvmpipe.*(Gl)$" <<<"$gl_adapter"
WGPU_BACKEND=gl cargo test -p kiln --test nan
WGPU_BACKEND=gl cargo test -p kiln --test parity -- integer_
WGPU_BACKEND=gl KILN_API_CALLS=300 cargo test -p kiln --test api_fuzz
echo "== the GPU suites as a hardware GPU runs them, on subgroups of 16 and of 4"
# lavapipe takes a software adapter's paths (row kernels a row to an invocation, the
# uniform-lhs matmul, products one to a launch, long sums cut into runs) and its default
# 256-bit vectors make subgroups of 8, where hardware GPUs run 16 to 64 lanes and a row of
# several subgroups combines them another way (row_reduction.rs). KILN_AS_HARDWARE=1
# gives it a hardware GPU's paths and LP_NATIVE_VECTOR_WIDTH its subgroup size. Left
# out: the three tests of loops past lavapipe's limit, which the software paths exist
# to cut or refuse (they ran above); past it, its loops end early.
gpu_adapter=$(KILN_DEVICE=gpu cargo run -q -p kiln-cli -- info | tail -n 1)
if grep -q llvmpipe <<<"$gpu_adapter"; then
    past_loops=(--skip products_over_long_k_match_cpu
        --skip loops_past_a_software_adapters_limit_are_refused_there
        --skip keys_past_a_software_adapters_loops_are_refused_there)
    # Fails unless `kiln info` shows both settings took at vector width $1.
    as_hardware_at() {
        local rows
        rows=$(LP_NATIVE_VECTOR_WIDTH=$1 KILN_AS_HARDWARE=1 KILN_DEVICE=gpu cargo run -q -p kiln-cli -- info | grep -E '^(kernels|row kernels) on')
        echo "$rows"
        grep -q "a hardware GPU's" <<<"$rows"
        grep -q "subgroups of $(($1 / 32))\$" <<<"$rows"
    }
    as_hardware_at 512
    LP_NATIVE_VECTOR_WIDTH=512 KILN_AS_HARDWARE=1 cargo test -p kiln-wgpu -p kiln -p kiln-nn --tests -- "${past_loops[@]}"
    as_hardware_at 128
    LP_NATIVE_VECTOR_WIDTH=128 KILN_AS_HARDWARE=1 cargo test -p kiln --test parity --test attention --test gradients -- "${past_loops[@]}"
else
    echo "not on lavapipe ($gpu_adapter): the suites above ran on its own paths and subgroups"
fi
echo "== kiln train --distributed: two ranks of the MLP under mpirun, one epoch"
mpi_flags=()
if mpirun --version | grep -q "Open MPI"; then mpi_flags=(--oversubscribe --allow-run-as-root); fi
cargo build -q -p kiln-cli --features distributed
dist_out=$(mktemp -d)
mpirun "${mpi_flags[@]}" -np 2 target/debug/kiln train mlp --distributed --device cpu --epochs 1 --out "$dist_out" | tee "$dist_out/log"
grep -q "batch 32 per rank, 2 ranks" "$dist_out/log"
grep -q "^test accuracy: 0\.[5-9]" "$dist_out/log"
test -f "$dist_out/mlp/model.safetensors"
