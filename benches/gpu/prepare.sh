#!/usr/bin/env bash
# Builds what benches/gpu/check.sh carries to the GPU machine (../shared/GPU.md): kiln,
# the parity tests and the burn peer in release, stripped and gzipped (the device tool
# carries 64 MiB with the tree; device_setup.sh unpacks them there), in .devbin/, with
# kiln as of commit $PREV as .devbin/kiln-prev (by default the build last measured on
# the H200; PREV= skips it), which the check times against this one; the Vulkan loader
# and libEGL packages in .gl/. Both folders are git-ignored (.git/info/exclude).
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

# The build to compare with, from its own tree and target folder.
prev=${PREV-8077428}
rm -f .devbin/kiln-prev .devbin/kiln-prev.gz
if [[ -n $prev ]]; then
    src=/tmp/kiln-prev-src
    rm -rf "$src" && mkdir -p "$src"
    git archive "$prev" | tar -x -C "$src"
    CARGO_TARGET_DIR=/tmp/kiln-prev-target cargo build --release -p kiln-cli --manifest-path "$src/Cargo.toml"
    cp /tmp/kiln-prev-target/release/kiln .devbin/kiln-prev
    strip .devbin/kiln-prev
fi
gzip -9 -f .devbin/kiln .devbin/peer-burn-wgpu .devbin/parity
[[ -e .devbin/kiln-prev ]] && gzip -9 -f .devbin/kiln-prev

if ! ls .gl/libvulkan1_*.deb .gl/libegl1_*.deb .gl/libglvnd0_*.deb > /dev/null 2>&1; then
    lists=/tmp/amd64-lists
    mkdir -p "$lists/partial"
    o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
    apt-get $o update
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0)
fi
ls -l .devbin .gl
