//! layer_norm over 4096 rows of 1024, in bytes moved.

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    common::bench_family(c, "norm");
}

criterion_group!(kiln, benches);
criterion_main!(kiln);
