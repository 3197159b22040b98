//! conv2d: 3x3, 1x1 and depthwise on a 16x64x32x32 batch, in flops.

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    common::bench_family(c, "conv2d");
}

criterion_group!(kiln, benches);
criterion_main!(kiln);
