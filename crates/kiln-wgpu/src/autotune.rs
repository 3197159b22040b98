//! The autotuner, for the matmul kernels (`MatmulVariant`), the convolution algorithms
//! (`ConvAlgorithm`), the ways of attention (`AttentionWay`) and of spreading the fused
//! attention kernels' rows (`AttentionSplit`). At the first product of
//! a shape class on an adapter it times each candidate on the real operands and keeps
//! the fastest: in memory for the device, and in `autotune.json` under the user's cache
//! directory (`KILN_CACHE_DIR` overrides it), keyed by adapter, driver, kiln version and
//! the candidates timed, so later processes start from the decision (and a new
//! candidate is tuned afresh).
//! `KILN_AUTOTUNE=0` uses the fixed defaults instead.
//!
//! A shape class buckets m, n and k to powers of two and keeps what changes which
//! kernel wins: the batch, the dtype, and whether the operands are aligned or read
//! transposed; a convolution's class is its product's, marked `conv`. Products too
//! small to be worth a tuning run take the fixed default. Attention is tuned at every
//! size: where it is small, launches decide, and the runs are short.

use kiln_core::{DType, Error, MatmulSpec, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flops (2mnk per batch) from which a shape class is tuned: about a 400^3 product.
const TUNE_FROM_FLOPS: usize = 1 << 27;
/// Timed runs per candidate, after one untimed run (which builds its pipeline).
const TIMED_RUNS: usize = 3;
const CACHE_FILE: &str = "autotune.json";

/// Whether hardware defaults give way to tuning (`KILN_AUTOTUNE=0` turns it off).
pub(crate) fn enabled() -> bool {
    std::env::var("KILN_AUTOTUNE").as_deref() != Ok("0")
}

/// Where decisions are kept: `$KILN_CACHE_DIR/autotune.json`, else the platform's cache
/// directory (`~/.cache/kiln/autotune.json` on Linux). `None` when there is neither.
pub fn cache_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("KILN_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::cache_dir()?.join("kiln"),
    };
    Some(dir.join(CACHE_FILE))
}

/// Every decision in the cache file, by adapter key, then shape class (`kiln info`).
pub type CacheEntries = BTreeMap<String, BTreeMap<String, String>>;

/// Reads the cache file; a missing file is empty, an unreadable one an error.
pub fn read_cache(path: &Path) -> Result<CacheEntries> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CacheEntries::new()),
        Err(e) => return Err(Error::io("autotune cache", path, e)),
    };
    serde_json::from_str(&text).map_err(|e| Error::InvalidArgument {
        op: "autotune cache",
        reason: format!("{}: {e}", path.display()),
    })
}

/// What the autotuner chooses between: a kernel or algorithm, known by its name.
pub(crate) trait Tunable: Copy {
    fn name(self) -> &'static str;
    fn from_name(name: &str) -> Option<Self>;
}

/// One device's decisions and where they persist.
#[derive(Debug)]
pub(crate) struct Autotuner {
    /// `name | driver | kiln version | candidates`: decisions never cross adapters,
    /// drivers, kilns or sets of candidates.
    adapter: String,
    path: Option<PathBuf>,
    /// The winner's name by shape class.
    decisions: HashMap<String, String>,
}

impl Autotuner {
    /// The decisions `path` holds for this adapter, whose tuned families have the
    /// `candidates` named. An unreadable cache is ignored (with a warning): it only
    /// costs tuning runs.
    pub(crate) fn load(
        adapter_name: &str,
        driver: &str,
        candidates: &[&str],
        path: Option<PathBuf>,
    ) -> Self {
        let adapter = format!(
            "{adapter_name} | {driver} | kiln {} | {}",
            env!("CARGO_PKG_VERSION"),
            candidates.join(",")
        );
        let mut decisions = HashMap::new();
        if let Some(p) = &path {
            match read_cache(p) {
                Ok(mut entries) => decisions.extend(entries.remove(&adapter).unwrap_or_default()),
                Err(e) => eprintln!("kiln: ignoring the autotune cache: {e}"),
            }
        }
        Autotuner {
            adapter,
            path,
            decisions,
        }
    }

    /// The decision for `class`, if it names a `T`.
    pub(crate) fn decision<T: Tunable>(&self, class: &str) -> Option<T> {
        self.decisions
            .get(class)
            .and_then(|name| T::from_name(name))
    }

    /// Every decision: the winner's name by shape class.
    pub(crate) fn decisions(&self) -> BTreeMap<String, String> {
        self.decisions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Keeps a decision, and writes it to the cache file (merged with what other
    /// processes wrote there; atomically, through a temporary file). A cache that cannot
    /// be written is warned about, not an error: the decision still holds in memory.
    pub(crate) fn keep(&mut self, class: String, winner: impl Tunable) {
        self.decisions.insert(class, winner.name().to_string());
        if let Some(path) = &self.path {
            if let Err(e) = self.persist(path) {
                eprintln!("kiln: could not write the autotune cache: {e}");
            }
        }
    }

    fn persist(&self, path: &Path) -> Result<()> {
        let mut entries = read_cache(path).unwrap_or_default();
        let mine = entries.entry(self.adapter.clone()).or_default();
        for (class, name) in &self.decisions {
            mine.insert(class.clone(), name.clone());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("autotune cache", dir, e))?;
        }
        let text = serde_json::to_string_pretty(&entries).map_err(|e| Error::InvalidArgument {
            op: "autotune cache",
            reason: e.to_string(),
        })?;
        let partial = path.with_extension(format!("json.{}.partial", std::process::id()));
        std::fs::write(&partial, text).map_err(|e| Error::io("autotune cache", &partial, e))?;
        std::fs::rename(&partial, path).map_err(|e| Error::io("autotune cache", path, e))
    }
}

/// The shape class of a matmul, e.g. `f32 m1024 n4096 k512 b1 aligned`.
pub(crate) fn shape_class(spec: &MatmulSpec, dtype: DType, aligned: bool) -> String {
    let layout = if aligned {
        "aligned".to_string()
    } else {
        let t = |col_stride: usize| if col_stride == 1 { "n" } else { "t" };
        format!(
            "strided {}{}",
            t(spec.lhs.col_stride),
            t(spec.rhs.col_stride)
        )
    };
    format!("{} {layout}", product_class(spec, dtype))
}

/// The shape class of a convolution (`kind`: `conv`, `conv-transpose`,
/// `conv-transpose phases`): its product's
/// (filters by columns), e.g. `conv f32 m64 n1024 k1024 b16`.
pub(crate) fn conv_class(kind: &str, product: &MatmulSpec, dtype: DType) -> String {
    format!("{kind} {}", product_class(product, dtype))
}

/// The shape class of an attention (`AttentionWay`), e.g. `attention f32 h128 q64 k64
/// d32 v32 causal backward`: heads, queries and keys bucketed as a product's dims, the
/// feature counts as they are (they choose the kernel's build), and whether the run
/// timed includes the backward (training) or not (inference).
pub fn attention_class(
    dtype: DType,
    heads: usize,
    [queries, keys]: [usize; 2],
    [head_dim, value_dim]: [usize; 2],
    causal: bool,
    backward: bool,
) -> String {
    let mask = if causal { "causal" } else { "full" };
    let pass = if backward { "backward" } else { "forward" };
    format!(
        "attention {} h{} q{} k{} d{head_dim} v{value_dim} {mask} {pass}",
        dtype.name(),
        bucket(heads),
        bucket(queries),
        bucket(keys),
    )
}

/// A dim of a shape class: the power of two at or above it, up to 2^14.
fn bucket(v: usize) -> usize {
    v.next_power_of_two().min(1 << 14)
}

fn product_class(spec: &MatmulSpec, dtype: DType) -> String {
    let batch = (spec.batch[0] * spec.batch[1]).next_power_of_two().min(64);
    format!(
        "{} m{} n{} k{} b{batch}",
        dtype.name(),
        bucket(spec.m),
        bucket(spec.n),
        bucket(spec.k)
    )
}

/// Whether a product is big enough to tune.
pub(crate) fn worth_tuning(spec: &MatmulSpec) -> bool {
    2 * spec.batch[0] * spec.batch[1] * spec.m * spec.n * spec.k >= TUNE_FROM_FLOPS
}

/// Times `run` for each candidate (one untimed run, then the best of `TIMED_RUNS`, each
/// timed by `time_one`) and returns the fastest. A candidate that fails to run (e.g.
/// over a limit of the adapter) is skipped; if all fail, the first one's error.
pub(crate) fn fastest<T: Tunable>(
    candidates: &[T],
    mut time_one: impl FnMut(T) -> Result<f64>,
) -> Result<T> {
    let mut best: Option<(f64, T)> = None;
    let mut first_error = None;
    for &v in candidates {
        let timed = time_one(v).and_then(|_| {
            (0..TIMED_RUNS).try_fold(f64::INFINITY, |min, _| Ok(min.min(time_one(v)?)))
        });
        match timed {
            Ok(t) if best.is_none_or(|(b, _)| t < b) => best = Some((t, v)),
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (best, first_error) {
        (Some((_, v)), _) => Ok(v),
        (None, Some(e)) => Err(e),
        (None, None) => Err(Error::InvalidArgument {
            op: "autotune",
            reason: "no candidates".into(),
        }),
    }
}

/// The decision for `class` on `device`: the one kept, or else `tune`'s (timing the
/// candidates, usually with `fastest`), kept for next time.
pub(crate) fn decide<T: Tunable>(
    device: &crate::GpuDevice,
    class: String,
    tune: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if let Some(kept) = device.tuned(&class) {
        return Ok(kept);
    }
    let winner = tune()?;
    device.keep_tuned(class, winner);
    Ok(winner)
}

/// The decision for `class` on `device`: the one kept, or else the fastest of
/// `candidates` as `run` times them (each run held until the clock stops, see
/// `seconds`), kept for next time.
pub(crate) fn tune<T: Tunable, R>(
    device: &crate::GpuDevice,
    class: String,
    candidates: &[T],
    mut run: impl FnMut(T) -> Result<R>,
) -> Result<T> {
    decide(device, class, || {
        fastest(candidates, |v| seconds(device, || run(v)))
    })
}

/// Seconds of one run of `f` on the device: GPU timestamps when the adapter has them,
/// the host clock around a synchronised run otherwise. What `f` returns is held until
/// the clock stops, so that work it left pending (deferred kernels) runs inside.
pub(crate) fn seconds<T>(device: &crate::GpuDevice, f: impl FnOnce() -> Result<T>) -> Result<f64> {
    device.synchronize()?;
    let start = Instant::now();
    let (_held, gpu) = device.gpu_time(f)?;
    Ok(gpu.map_or(start.elapsed().as_secs_f64(), |d| d.as_secs_f64()))
}
