//! Reading the peer harness's output (`../shared/peers/burn-wgpu`), one line per kernel:
//! `<backend> <kernel> <shape> <ms> ms <rate> <unit>`, e.g.
//! `burn-wgpu matmul n=1024 985.080 ms 2.18 GFLOP/s`.

use kiln::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct PeerResult {
    pub backend: String,
    /// Kernel and shape, as `Case::peer_key` names them (`matmul n=1024`).
    pub key: String,
    pub ms: f64,
    pub rate: f64,
    pub unit: String,
}

/// Parses the harness output; lines that are not results (build noise) are skipped.
pub fn parse_peer(text: &str) -> Result<Vec<PeerResult>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(ms_at) = words.iter().position(|&w| w == "ms") else {
            continue;
        };
        if ms_at < 3 || words.len() < ms_at + 3 {
            continue;
        }
        let number = |w: &str| {
            w.parse::<f64>().map_err(|_| Error::InvalidArgument {
                op: "parse_peer",
                reason: format!("not a number: {w:?} in {line:?}"),
            })
        };
        out.push(PeerResult {
            backend: words[0].to_string(),
            key: words[1..ms_at - 1].join(" "),
            ms: number(words[ms_at - 1])?,
            rate: number(words[ms_at + 1])?,
            unit: words[ms_at + 2].to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_harness_lines_and_skips_noise() {
        let text = "   Compiling burn v0.20.1\nburn-wgpu matmul n=1024 985.080 ms 2.18 GFLOP/s\n\
                    burn-ndarray conv2d 16x64x32x32 k3 12.5 ms 6.80 GFLOP/s\n";
        let got = parse_peer(text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key, "matmul n=1024");
        assert_eq!((got[0].ms, got[0].rate), (985.08, 2.18));
        assert_eq!(got[1].backend, "burn-ndarray");
        assert_eq!(got[1].key, "conv2d 16x64x32x32 k3");
        assert!(parse_peer("x y z ms 1.0 GB/s").is_err());
    }
}
