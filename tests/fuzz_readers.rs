//! Every file reader against seeded random mutations of a valid file: truncations,
//! flipped bytes, random insertions, and declared sizes made huge. Each input must give
//! `Ok` or a clear error: no panic, and no allocation sized beyond what the input can
//! justify (a header claiming 2^32 images must not make the reader ask for memory).
//! The seed is printed; `KILN_FUZZ_SEED` replays one.

use flate2::write::GzEncoder;
use kiln::Tensor;
use kiln_nn::data::{parse_idx, read_csv, CharVocab};
use kiln_nn::train::{load_checkpoint, save_checkpoint};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Counts the largest single allocation of the current thread (the tests run in
/// parallel, each reader on its own thread).
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// A small, seeded generator (splitmix64): the inputs are the same for a seed.
struct Rand(u64);

impl Rand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed() -> u64 {
    let seed = std::env::var("KILN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("fuzz seed {seed} (KILN_FUZZ_SEED={seed} replays it)");
    seed
}

/// One mutation of `valid`: `sizes` are byte ranges that hold declared sizes.
fn mutate(valid: &[u8], sizes: &[std::ops::Range<usize>], rng: &mut Rand) -> Vec<u8> {
    let mut b = valid.to_vec();
    match rng.below(5) {
        0 => b.truncate(rng.below(valid.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let at = rng.below(b.len() + 1);
            let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
        }
        3 if !sizes.is_empty() => {
            // A declared size at or near its maximum.
            let r = sizes[rng.below(sizes.len())].clone();
            for i in r {
                b[i] = if rng.below(2) == 0 { 0xff } else { 0x7f };
            }
        }
        _ => {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
    }
    b
}

/// Feeds `inputs` mutations of `valid` to `read` within `budget`; returns how many ran.
/// `allowance` is how much one allocation may be, given the input's length.
fn fuzz(
    name: &str,
    valid: &[u8],
    sizes: &[std::ops::Range<usize>],
    inputs: usize,
    allowance: impl Fn(usize) -> usize,
    read: impl Fn(&[u8]) -> kiln::Result<()>,
) -> usize {
    assert!(read(valid).is_ok(), "{name}: the valid file must read");
    let mut rng = Rand(seed() ^ name.len() as u64);
    let (start, budget) = (Instant::now(), Duration::from_secs(20));
    let mut ran = 0;
    while ran < inputs && start.elapsed() < budget {
        let input = mutate(valid, sizes, &mut rng);
        LARGEST.with(|l| l.set(0));
        let outcome = catch_unwind(AssertUnwindSafe(|| read(&input)));
        let largest = LARGEST.with(|l| l.get());
        assert!(
            outcome.is_ok(),
            "{name}: input {ran} ({} bytes) panicked",
            input.len()
        );
        if let Ok(Err(e)) = &outcome {
            assert!(
                !e.to_string().is_empty(),
                "{name}: an error without a message"
            );
        }
        assert!(
            largest <= allowance(input.len()),
            "{name}: input {ran} of {} bytes made an allocation of {largest} bytes",
            input.len()
        );
        ran += 1;
    }
    eprintln!("{name}: {ran} inputs, none panicked");
    ran
}

/// f32 tensors and copies of the input: a few times its length, plus fixed overheads.
fn small(len: usize) -> usize {
    64 * len + (1 << 20)
}

#[test]
fn idx_reader_survives_mutations() {
    // 3 images of 4x5 bytes.
    let mut valid = vec![0, 0, 0x08, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    valid.extend((0..60).map(|i| i as u8));
    let sizes = [4..8, 8..12, 12..16];
    let ran = fuzz("idx", &valid, &sizes, 3000, small, |b| {
        parse_idx(b, "fuzz").map(drop)
    });
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&valid).unwrap();
    let gz = gz.finish().unwrap();
    // Gzip may hold more than its length: the allowance is the valid file's decoded size.
    let gz_ran = fuzz(
        "idx.gz",
        &gz,
        &[],
        1000,
        |_| small(valid.len()),
        |b| parse_idx(b, "fuzz").map(drop),
    );
    assert!(ran + gz_ran >= 500, "too few inputs ran");
}

#[test]
fn csv_reader_survives_mutations() {
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("input.csv");
    let valid = b"x,y,label\n1.5,-2,0\n3,4e-3,1\n0.25,8,2\n".to_vec();
    let ran = fuzz("csv", &valid, &[], 1500, small, |b| {
        std::fs::write(&path, b).unwrap();
        read_csv(&path, true).map(drop)
    });
    std::fs::remove_dir_all(&dir).ok();
    assert!(ran >= 200, "too few inputs ran");
}

#[test]
fn checkpoint_reader_survives_mutations() {
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let cpu = kiln::Device::cpu();
    let state = vec![
        (
            "0.weight".to_string(),
            Tensor::from_vec(vec![1.0f32; 6], [2, 3], &cpu).unwrap(),
        ),
        (
            "0.bias".to_string(),
            Tensor::from_vec(vec![2i32; 2], [2], &cpu).unwrap(),
        ),
    ];
    let metadata = HashMap::from([("epoch".to_string(), "3".to_string())]);
    save_checkpoint(&path, &state, &metadata).unwrap();
    let valid = std::fs::read(&path).unwrap();
    // The 8-byte header length, and the digits of the shapes and offsets in the header.
    let header = String::from_utf8_lossy(&valid[8..]).to_string();
    let header_length = 0..8;
    let mut sizes = Vec::new();
    sizes.push(header_length);
    for (i, c) in header.char_indices() {
        if c.is_ascii_digit() && i + 8 < valid.len() {
            sizes.push(8 + i..9 + i);
        }
    }
    let ran = fuzz("safetensors", &valid, &sizes, 1500, small, |b| {
        std::fs::write(&path, b).unwrap();
        load_checkpoint(&path).map(drop)
    });
    std::fs::remove_dir_all(&dir).ok();
    assert!(ran >= 200, "too few inputs ran");
}

#[test]
fn vocabulary_survives_mutations() {
    let valid = b"First Citizen:\nBefore we proceed any further, hear me speak.\n".to_vec();
    let vocab = CharVocab::from_text(&String::from_utf8_lossy(&valid));
    let ran = fuzz("vocabulary", &valid, &[], 3000, small, |b| {
        let text = String::from_utf8_lossy(b);
        let built = CharVocab::from_text(&text);
        let ids = built.encode(&text)?;
        assert_eq!(
            built.decode(&ids),
            text,
            "a vocabulary reads back its own text"
        );
        // Text from outside the vocabulary is an error, not a panic.
        vocab.encode(&text).map(drop)
    });
    assert!(ran >= 500, "too few inputs ran");
}
