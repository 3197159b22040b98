//! Elementwise add and gelu over 16M f32 elements, and a chain of 1,000 tiny ops (dispatch overhead).

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    for family in ["elementwise", "dispatch"] {
        common::bench_family(c, family);
    }
}

criterion_group!(kiln, benches);
criterion_main!(kiln);
