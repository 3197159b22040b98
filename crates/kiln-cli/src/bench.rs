//! `kiln bench`: every kernel family at fixed shapes on one device, with rooflines
//! probed in the same run; and `kiln bench-report`: docs/BENCHMARKS.md's tables from
//! `kiln bench --json` files and the peer harness's output.

use clap::Args;
use kiln::{Device, Error, Result};
use kiln_bench::{markdown, parse_peer, run_suite, Report, Scale};
use std::path::PathBuf;

#[derive(Args)]
pub struct BenchArgs {
    /// cpu, gpu, or auto (the device `kiln train` would pick).
    #[arg(long, default_value = "gpu")]
    device: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fewer and smaller cases, shorter timing: a smoke test, not figures to quote.
    #[arg(long)]
    quick: bool,
    /// Add sizes that fill a data-centre GPU (matmul 4096, rows of 16384x4096) and use
    /// larger roofline probes.
    #[arg(long, conflicts_with = "quick")]
    large: bool,
    /// Run only these families (matmul, conv2d, softmax, reduce, norm, elementwise, dispatch).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let scale = match (args.quick, args.large) {
        (true, _) => Scale::Quick,
        (_, true) => Scale::Large,
        _ => Scale::Standard,
    };
    let report = run_suite(&device, scale, &args.only)?;
    let transfers = args.only.is_empty() || args.only.iter().any(|f| f == "transfer");
    if let (Some(gpu), true) = (device.as_gpu(), transfers) {
        for mib in [4, 16, 64] {
            println!("{}", gpu.readback_phases(mib << 20)?);
        }
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::InvalidArgument {
            op: "kiln bench",
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| Error::io("kiln bench", &path, e))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct ReportArgs {
    /// `kiln bench --json` files, one per device.
    #[arg(long = "kiln", required = true)]
    reports: Vec<PathBuf>,
    /// The peer harness's output, one file per backend.
    #[arg(long = "peer")]
    peers: Vec<PathBuf>,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let op = "kiln bench-report";
    let read = |path: &PathBuf| std::fs::read_to_string(path).map_err(|e| Error::io(op, path, e));
    let mut reports = Vec::new();
    for path in &args.reports {
        let report: Report =
            serde_json::from_str(&read(path)?).map_err(|e| Error::InvalidArgument {
                op,
                reason: format!("{}: {e}", path.display()),
            })?;
        reports.push(report);
    }
    let mut peers = Vec::new();
    for path in &args.peers {
        peers.extend(parse_peer(&read(path)?)?);
    }
    print!("{}", markdown(&reports, &peers));
    Ok(())
}
