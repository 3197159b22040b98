//! The `kiln` command-line tool.

mod allocator;
mod bench;
mod char_lm;
mod closed_pipe;
mod distributed;
mod explain;
mod explain_csv;
mod gan;
mod info;
mod models;
mod out_dir;
mod predict;
mod profile;
mod saliency;
mod tabular;
mod thread_cpu;
mod train;
#[cfg(test)]
mod training_parity;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "GPU-accelerated tensors and deep learning in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter wgpu can see and say which device kiln would use.
    Info,
    /// Train a model and report what it did (with no arguments: a CNN on the bundled MNIST digits).
    Train(train::TrainArgs),
    /// Predict with a model `kiln train mlp --csv` trained, for the rows of a CSV.
    Predict(predict::PredictArgs),
    /// Show which pixels drove a trained CNN's predictions, as a PNG.
    Saliency(saliency::SaliencyArgs),
    /// Explain a trained CNN's (or LM's, or --csv model's) predictions by attribution methods, or check them (--check).
    Explain(explain::ExplainArgs),
    /// Profile a built-in model's training step: kernels launched, bytes, GPU time.
    Profile(profile::ProfileArgs),
    /// Time every kernel family on one device, against that device's own rooflines.
    Bench(bench::BenchArgs),
    /// Print docs/BENCHMARKS.md's tables from `kiln bench --json` files and peer output.
    BenchReport(bench::ReportArgs),
}

fn main() -> ExitCode {
    // Mesa's Vulkan driver complains twice on stderr when XDG_RUNTIME_DIR is unset
    // (headless servers, containers). kiln opens no window, so any directory will do;
    // set here, before any thread starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    allocator::keep_freed_memory();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Train(_)) {
        closed_pipe::end_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Info => info::run(),
        Command::Train(args) => train::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Saliency(args) => saliency::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchReport(args) => bench::report(args),
    };
    match result {
        Ok(()) => {
            distributed::finish();
            ExitCode::SUCCESS
        }
        Err(e) => {
            distributed::end_job_on(&e);
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
