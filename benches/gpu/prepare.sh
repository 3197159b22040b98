#!/usr/bin/env bash
# Builds what benches/gpu/check.sh carries to the GPU machine (../shared/GPU.md): kiln,
# the parity tests and the burn peer in release, stripped, in .devbin/; the Vulkan
# loader and libEGL packages in .gl/. Both folders are git-ignored (.git/info/exclude).
# Then, with the device tool:
#
#   run(carry: [".devbin", ".gl"],
#       command: "source benches/gpu/device_setup.sh && bash benches/gpu/check.sh")
set -euo pipefail
cd "$(dirname "$0")/../.."
peer=${PEER_DIR:-../shared/peers/burn-wgpu}

for ignored in /.devbin/ /.gl/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
mkdir -p .devbin .gl

cargo build --release -p kiln-cli
CARGO_TARGET_DIR=/tmp/peer-burn cargo build --release --manifest-path "$peer/Cargo.toml"
cp target/release/kiln /tmp/peer-burn/release/peer-burn-wgpu .devbin/
# The parity tests, to prove every kernel against the CPU on the card itself.
parity=$(cargo test --release --workspace --test parity --no-run 2>&1 |
    sed -n 's|.*Executable .*(\(target/release/deps/parity-[0-9a-f]*\)).*|\1|p' | tail -n 1)
cp "$parity" .devbin/parity
strip .devbin/kiln .devbin/peer-burn-wgpu .devbin/parity

if ! ls .gl/libvulkan1_*.deb .gl/libegl1_*.deb .gl/libglvnd0_*.deb > /dev/null 2>&1; then
    lists=/tmp/amd64-lists
    mkdir -p "$lists/partial"
    o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
    apt-get $o update
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0)
fi
ls -l .devbin .gl
