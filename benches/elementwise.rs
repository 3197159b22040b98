//! Elementwise add and gelu over 16M f32 elements, in bytes moved per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_bench::{devices, input};

fn elementwise(c: &mut Criterion) {
    const N: usize = 1 << 24;
    for (name, device) in devices() {
        let mut group = c.benchmark_group(format!("elementwise/{name}"));
        group.sample_size(10);
        let (x, y) = (input(&[N], &device, 1), input(&[N], &device, 2));
        group.throughput(Throughput::Bytes(3 * 4 * N as u64)); // two reads, one write
        group.bench_function("add 16M", |b| {
            b.iter(|| {
                let out = x.add(&y).expect("add");
                device.synchronize().expect("sync");
                out
            })
        });
        group.throughput(Throughput::Bytes(2 * 4 * N as u64));
        group.bench_function("gelu 16M", |b| {
            b.iter(|| {
                let out = x.gelu().expect("gelu");
                device.synchronize().expect("sync");
                out
            })
        });
        group.finish();
    }
}

criterion_group!(benches, elementwise);
criterion_main!(benches);
