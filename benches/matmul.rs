//! Square f32 matmul on each device, in GFLOP/s (2*n^3 flops per product).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_bench::{devices, input};

fn matmul(c: &mut Criterion) {
    for (name, device) in devices() {
        let mut group = c.benchmark_group(format!("matmul/{name}"));
        group.sample_size(10);
        for n in [256usize, 512, 1024] {
            let (a, b) = (input(&[n, n], &device, 1), input(&[n, n], &device, 2));
            group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
            group.bench_function(format!("{n}"), |bench| {
                bench.iter(|| {
                    let out = a.matmul(&b).expect("matmul");
                    device.synchronize().expect("sync"); // the clock stops after the GPU finishes
                    out
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, matmul);
criterion_main!(benches);
