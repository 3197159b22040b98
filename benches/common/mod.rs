//! Shared by the criterion benches: each registers one family of `kiln bench`'s suite,
//! so the two always measure the same shapes.

use criterion::{Criterion, Throughput};
use kiln_bench::{devices, suite, Scale, Unit};

/// Benchmarks every case of `family` on the CPU and (when one opens) the GPU, waiting
/// for the device before the clock stops.
pub fn bench_family(c: &mut Criterion, family: &str) {
    for (name, device) in devices() {
        let mut group = c.benchmark_group(format!("{family}/{name}"));
        group.sample_size(10);
        for case in suite(Scale::Standard)
            .into_iter()
            .filter(|case| case.family == family)
        {
            let run = case.setup(&device).expect("benchmark inputs");
            group.throughput(match case.unit {
                Unit::Flops | Unit::Ops => Throughput::Elements(case.work as u64),
                Unit::Bytes | Unit::TransferBytes => Throughput::Bytes(case.work as u64),
            });
            group.bench_function(case.name.as_str(), |b| {
                b.iter(|| {
                    let out = run().expect("kernel");
                    device.synchronize().expect("sync");
                    out
                })
            });
        }
        group.finish();
    }
}
