//! Matmul: square 256-2048, a transformer projection and batched attention, in flops (2 per multiply-add).

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    common::bench_family(c, "matmul");
}

criterion_group!(kiln, benches);
criterion_main!(kiln);
