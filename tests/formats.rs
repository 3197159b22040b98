//! Malformed files (truncated, wrong magic, huge declared counts) come back as errors,
//! without panicking and without allocating what a header claims.

use flate2::write::GzEncoder;
use kiln::Error;
use kiln_nn::data::{parse_idx, read_csv};
use kiln_nn::train::load_checkpoint;
use std::io::Write;

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b
}

fn is_io(e: &Error) -> bool {
    matches!(e, Error::Io { .. })
}

#[test]
fn idx_reader_accepts_good_files_and_rejects_bad_ones() {
    let mut good = idx_header(&[2, 3]);
    good.extend([1, 2, 3, 4, 5, 6]);
    assert_eq!(parse_idx(&good, "good").unwrap().dims, vec![2, 3]);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good).unwrap();
    assert_eq!(
        parse_idx(&gz.finish().unwrap(), "good.gz").unwrap().data,
        vec![1, 2, 3, 4, 5, 6]
    );

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("wrong magic", vec![0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 1]),
        (
            "float elements",
            vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        ),
        ("no dims", vec![0, 0, 0x08, 0]),
        ("truncated header", vec![0, 0, 0x08, 2, 0, 0]),
        (
            "truncated data",
            [idx_header(&[2, 3]), vec![1, 2, 3]].concat(),
        ),
        ("trailing data", [idx_header(&[1]), vec![1, 2]].concat()),
        // 4 billion images of 4 billion pixels: refused before any allocation.
        (
            "huge declared count",
            [idx_header(&[u32::MAX, u32::MAX, 28]), vec![0; 64]].concat(),
        ),
        (
            "large but plausible count, little data",
            [idx_header(&[60_000, 28, 28]), vec![0; 100]].concat(),
        ),
    ];
    for (name, bytes) in cases {
        let e = parse_idx(&bytes, name).unwrap_err();
        assert!(is_io(&e), "{name}: {e}");
    }
    // A truncated gzip stream is an error too.
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&[idx_header(&[100, 100]), vec![7; 10_000]].concat())
        .unwrap();
    let compressed = gz.finish().unwrap();
    assert!(is_io(
        &parse_idx(&compressed[..compressed.len() / 2], "cut.gz").unwrap_err()
    ));
}

#[test]
fn csv_reader_rejects_ragged_and_non_numeric_rows() {
    let dir = std::env::temp_dir().join(format!("kiln-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let t = read_csv(write("good.csv", "a,b\n1,2\n3.5,-4\n"), true).unwrap();
    assert_eq!(
        (t.dims().to_vec(), t.to_vec::<f32>().unwrap()),
        (vec![2, 2], vec![1.0, 2.0, 3.5, -4.0])
    );
    assert!(is_io(
        &read_csv(write("ragged.csv", "1,2\n3\n"), false).unwrap_err()
    ));
    assert!(is_io(
        &read_csv(write("text.csv", "1,x\n"), false).unwrap_err()
    ));
    assert!(is_io(
        &read_csv(dir.join("missing.csv"), false).unwrap_err()
    ));
    // Fields that parse as floats but are not data, and files without data rows.
    for (name, text, header) in [
        ("nan.csv", "1,nan\n", false),
        ("inf.csv", "inf,2\n", false),
        ("minus_inf.csv", "1,-inf\n", false),
        ("empty.csv", "", false),
        ("header_only.csv", "a,b\n", true),
    ] {
        let e = read_csv(write(name, text), header).unwrap_err();
        assert!(is_io(&e), "{name}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn safetensors_loader_rejects_malformed_files() {
    let file = |header: &str, data: &[u8]| -> Vec<u8> {
        [
            (header.len() as u64).to_le_bytes().to_vec(),
            header.as_bytes().to_vec(),
            data.to_vec(),
        ]
        .concat()
    };
    let dir = std::env::temp_dir().join(format!("kiln-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut good = (header.len() as u64).to_le_bytes().to_vec();
    good.extend(header);
    good.extend(1.0f32.to_le_bytes());
    good.extend(2.0f32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated data", good[..good.len() - 3].to_vec()),
        // A header length of 2^60 bytes: refused, not allocated.
        (
            "huge header length",
            [(1u64 << 60).to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
        ),
        (
            "garbage header",
            [8u64.to_le_bytes().to_vec(), b"not json".to_vec()].concat(),
        ),
        (
            "unsupported dtype",
            file(
                r#"{"w":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}"#,
                &[1, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        // PyTorch's int64 is read as i32 only when every value fits.
        (
            "int64 out of range",
            file(
                r#"{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
                &(1i64 << 40).to_le_bytes(),
            ),
        ),
    ];
    // PyTorch's other dtypes convert: bool and int64 to i32, bf16 to f32.
    for (header, data, want) in [
        (
            r#"{"w":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
            vec![1u8, 0],
            vec![1.0, 0.0],
        ),
        (
            r#"{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            (-7i64).to_le_bytes().to_vec(),
            vec![-7.0],
        ),
        (
            r#"{"w":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#,
            vec![0xc0, 0x3f],
            vec![1.5],
        ),
    ] {
        let p = dir.join("converted.safetensors");
        std::fs::write(&p, file(header, &data)).unwrap();
        let t = load_checkpoint(&p).unwrap().tensors["w"].clone();
        assert_eq!(t.to_f64_vec().unwrap(), want, "{header}");
    }
    let p = dir.join("good.safetensors");
    std::fs::write(&p, &good).unwrap();
    assert_eq!(
        load_checkpoint(&p).unwrap().tensors["w"]
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0, 2.0]
    );
    for (name, bytes) in cases {
        let p = dir.join(format!("{}.safetensors", name.replace(' ', "_")));
        std::fs::write(&p, bytes).unwrap();
        let e = load_checkpoint(&p).unwrap_err();
        assert!(is_io(&e), "{name}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
