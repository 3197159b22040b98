//! Running the suite into a `Report`, and showing reports: a terminal table, JSON, and
//! the Markdown side-by-side table of docs/BENCHMARKS.md.

use crate::cases::{suite, Case, Scale, Unit};
use crate::measure::{time, Clock, Timing};
use crate::peer::PeerResult;
use crate::roofline::Rooflines;
use crate::HostReadKind;
use kiln::{Device, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub family: String,
    pub name: String,
    /// `GFLOP/s`, `GB/s` or `us/op`.
    pub unit: String,
    pub timing: Timing,
    /// The median as `unit`.
    pub rate: f64,
    /// The rate as a percentage of the roofline that bounds it (none for `us/op`).
    pub roofline_pct: Option<f64>,
    pub peer_key: Option<String>,
    /// For cases with a peer: median wall-clock ms of the run plus reading the result
    /// back to the host, which is what the peer harness times. The result is read as
    /// the peer's `into_data` reads it, into host-visible bytes (`read_host`, the mapped
    /// staging buffer), not copied out again into a vector of its own (`to_vec`).
    pub with_readback_ms: Option<f64>,
    /// The same with `to_vec`'s copy out (absent from reports before 2026-12-01).
    #[serde(default)]
    pub with_copy_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub kiln_version: String,
    /// `cpu`, or the adapter as `kiln info` names it.
    pub device: String,
    pub gpu: bool,
    pub rooflines: Rooflines,
    pub entries: Vec<Entry>,
    /// Cases that could not run on the device, with the error.
    #[serde(default)]
    pub failures: Vec<String>,
}

/// Runs every case (those of `only`'s families when it is not empty) on `device`,
/// printing each result as it lands.
pub fn run_suite(device: &Device, scale: Scale, only: &[String]) -> Result<Report> {
    let budget = Duration::from_secs_f64(if scale == Scale::Quick { 0.3 } else { 1.5 });
    let rooflines = Rooflines::measure(device, budget, scale)?;
    println!(
        "rooflines: {:.1} GFLOP/s FMA, {:.2} GB/s copy",
        rooflines.fma_gflops, rooflines.copy_gbs
    );
    let mut entries = Vec::new();
    let mut failures = Vec::new();
    for case in suite(scale) {
        if !only.is_empty() && !only.iter().any(|f| f == case.family) {
            continue;
        }
        let entry = match measure_case(device, &case, budget, &rooflines) {
            Ok(entry) => entry,
            // One case over an adapter's limits must not lose the others' figures.
            Err(e) => {
                let failure = format!("{} {}: {e}", case.family, case.name);
                println!("failed: {failure}");
                failures.push(failure);
                continue;
            }
        };
        println!("{}", row(&entry));
        entries.push(entry);
    }
    Ok(Report {
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        device: device_name(device),
        gpu: device.is_gpu(),
        rooflines,
        entries,
        failures,
    })
}

/// Times one case and shows it against its roofline.
fn measure_case(
    device: &Device,
    case: &Case,
    budget: Duration,
    rooflines: &Rooflines,
) -> Result<Entry> {
    let run = case.setup(device)?;
    let timing = time(device, case.clock, budget, &|| run())?;
    let (unit, rate, roof) = match case.unit {
        Unit::Flops => (
            "GFLOP/s",
            case.work / timing.median / 1e9,
            Some(rooflines.fma_gflops),
        ),
        Unit::Bytes => (
            "GB/s",
            case.work / timing.median / 1e9,
            Some(rooflines.copy_gbs),
        ),
        Unit::TransferBytes => ("GB/s", case.work / timing.median / 1e9, None),
        Unit::Ops => ("us/op", timing.median / case.work * 1e6, None),
    };
    let (with_readback_ms, with_copy_ms) = match case.peer_key {
        Some(_) => (
            Some(with_readback(&*run, HostReadKind::Mapped)? * 1e3),
            Some(with_readback(&*run, HostReadKind::Copied)? * 1e3),
        ),
        None => (None, None),
    };
    Ok(Entry {
        family: case.family.to_string(),
        name: case.name.clone(),
        unit: unit.to_string(),
        rate,
        roofline_pct: roof.map(|r| 100.0 * rate / r),
        peer_key: case.peer_key.clone(),
        with_readback_ms,
        with_copy_ms,
        timing,
    })
}

/// Median of five runs that each end with the output read to the host `how`.
fn with_readback(run: &dyn Fn() -> Result<kiln::Tensor>, how: HostReadKind) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        how.read(&run()?)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}

fn device_name(device: &Device) -> String {
    match device.as_gpu() {
        Some(g) => {
            let s = g.summary();
            format!("{} ({}, {})", s.name, s.backend, s.driver)
        }
        None => format!(
            "cpu backend ({} threads available)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    }
}

/// One line of the terminal table.
pub fn row(e: &Entry) -> String {
    let t = &e.timing;
    let clock = match t.clock {
        Clock::GpuTimestamps => "gpu",
        Clock::WallClock => "wall",
        Clock::HostRecording => "host",
    };
    let roof = e
        .roofline_pct
        .map_or(String::new(), |p| format!("{p:5.1}% of roof"));
    format!(
        "{:<11} {:<34} {:>10.3} ms [{:.3}-{:.3}] {:>9.2} {:<7} {} ({clock}, {} reps)",
        e.family,
        e.name,
        t.median * 1e3,
        t.min * 1e3,
        t.max * 1e3,
        e.rate,
        e.unit,
        roof,
        t.reps
    )
}

/// The Markdown tables of docs/BENCHMARKS.md: per report, every kiln result; then kiln
/// beside each peer result with a matching key, as a ratio of the peer's time. A peer
/// backend named `*wgpu*` pairs with GPU reports, any other with CPU reports.
pub fn markdown(reports: &[Report], peers: &[PeerResult]) -> String {
    let mut md = String::new();
    for r in reports {
        let _ = writeln!(md, "### kiln on {}\n", r.device);
        let _ = writeln!(
            md,
            "Rooflines probed in the same run: {:.1} GFLOP/s (f32 FMA), {:.2} GB/s ({} MiB copy, read + write).\n",
            r.rooflines.fma_gflops,
            r.rooflines.copy_gbs,
            r.rooflines.copy_bytes >> 20
        );
        md.push_str("| family | case | median ms | min-max ms | rate | % of roofline |\n");
        md.push_str("|---|---|---:|---:|---:|---:|\n");
        for e in &r.entries {
            let t = &e.timing;
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {:.3}-{:.3} | {:.2} {} | {} |",
                e.family,
                e.name,
                t.median * 1e3,
                t.min * 1e3,
                t.max * 1e3,
                e.rate,
                e.unit,
                e.roofline_pct.map_or("-".into(), |p| format!("{p:.1}%"))
            );
        }
        for f in &r.failures {
            let _ = writeln!(md, "\nNot measured: {f}");
        }
        md.push('\n');
    }
    let (cuda, others): (Vec<&PeerResult>, Vec<&PeerResult>) =
        peers.iter().partition(|p| p.backend.contains("cuda"));
    md.push_str("### Side by side\n\n");
    md.push_str("Both columns time the kernel plus reading its output back to the host, as the peer harness does: into host-visible memory (kiln's `read_host`, burn's `into_data`: the mapped staging buffer), not copied again; the last column adds kiln's copy out (`to_vec`).\n\n");
    md.push_str("| kernel | kiln device | kiln ms | peer | peer ms | kiln speed-up | kiln ms with to_vec |\n");
    md.push_str("|---|---|---:|---|---:|---:|---:|\n");
    for p in others {
        for (r, e) in matches(reports, p, |r| r.gpu == p.backend.contains("wgpu")) {
            if let Some(ms) = e.with_readback_ms {
                let copied = e.with_copy_ms.map_or("-".into(), |c| format!("{c:.3}"));
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.3} | {} | {:.3} | {:.2}x | {copied} |",
                    p.key,
                    short(&r.device),
                    ms,
                    p.backend,
                    p.ms,
                    p.ms / ms
                );
            }
        }
    }
    if !cuda.is_empty() {
        md.push_str("\n### Kernel time against CUDA on the same card\n\n");
        md.push_str("kiln's median kernel time (GPU timestamps) beside the CUDA peer's (CUDA events, after warm-up); the share is the CUDA time over kiln's.\n\n");
        md.push_str(
            "| kernel | kiln ms | kiln rate | CUDA peer | peer ms | kiln as share of peer |\n",
        );
        md.push_str("|---|---:|---:|---|---:|---:|\n");
        for p in cuda {
            for (_, e) in matches(reports, p, |r| r.gpu) {
                let ms = e.timing.median * 1e3;
                let _ = writeln!(
                    md,
                    "| {} | {:.3} | {:.1} {} | {} | {:.3} | {:.0}% |",
                    p.key,
                    ms,
                    e.rate,
                    e.unit,
                    p.backend,
                    p.ms,
                    100.0 * p.ms / ms
                );
            }
        }
    }
    md
}

/// The entries of the reports `keep` accepts whose peer key is `p`'s.
fn matches<'a>(
    reports: &'a [Report],
    p: &'a PeerResult,
    keep: impl Fn(&Report) -> bool + 'a,
) -> impl Iterator<Item = (&'a Report, &'a Entry)> + 'a {
    reports.iter().filter(move |r| keep(r)).flat_map(move |r| {
        r.entries
            .iter()
            .filter(move |e| e.peer_key.as_deref() == Some(&p.key))
            .map(move |e| (r, e))
    })
}

fn short(device: &str) -> &str {
    device.split(" (").next().unwrap_or(device)
}
