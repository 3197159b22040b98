//! Softmax and sum/mean/max over the last and first dims, in bytes moved.

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    for family in ["softmax", "reduce"] {
        common::bench_family(c, family);
    }
}

criterion_group!(kiln, benches);
criterion_main!(kiln);
