//! Host <-> GPU copies: uploads through the queue's write (up to 1 MiB) and through the
//! device's staging chunks (8 MiB each, two used in turn), read back bit for bit, and
//! ordered before the work recorded after them; readbacks left mapped (`read_host`)
//! give what `to_vec` gives, while others are held and after they are dropped.

mod common;

use common::*;
use half::f16;
use kiln::{DType, Error, HostRead, Tensor};

const MIB: usize = 1 << 20;

/// `n` distinct finite values, different for each `salt`.
fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 1_000_003) as f32 * 0.25 - 1e5)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn uploads_of_every_size_read_back_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    // f32 element counts around the edges: the queue's write (up to 1 MiB), one chunk
    // just past it, a whole chunk, a chunk and a word, and two and a half chunks (the
    // first chunk written again within one upload).
    let sizes = [
        0,
        1,
        MIB / 4,
        MIB / 4 + 1,
        2 * MIB / 4 + 3,
        8 * MIB / 4,
        8 * MIB / 4 + 1,
        20 * MIB / 4 + 5,
    ];
    for (salt, &n) in sizes.iter().enumerate() {
        let host = values(n, salt);
        let x = Tensor::from_slice(&host, [n], &gpu).unwrap();
        let back = x.to_vec::<f32>().unwrap();
        assert!(
            bits(&back) == bits(&host),
            "f32 upload of {n} elements differs"
        );
        // The same values handed over as a vector take the same path.
        let y = Tensor::from_vec(host.clone(), [n], &gpu).unwrap();
        assert!(
            bits(&y.to_vec::<f32>().unwrap()) == bits(&host),
            "from_vec of {n}"
        );
    }
    // Half-word tails: 3 halves by the queue's write, and a chunk and one half staged.
    for n in [3, (8 * MIB + 2) / 2] {
        let host: Vec<f16> = values(n, 11).iter().map(|&v| f16::from_f32(v)).collect();
        let x = Tensor::from_slice(&host, [n], &gpu).unwrap();
        let back = x.to_vec::<f16>().unwrap();
        assert!(
            back.iter()
                .zip(&host)
                .all(|(a, b)| a.to_bits() == b.to_bits())
                && back.len() == n,
            "f16 upload of {n} elements differs"
        );
    }
    let ids: Vec<i32> = (0..3 * MIB as i32).map(|i| i.wrapping_mul(-7)).collect();
    let x = Tensor::from_slice(&ids, [ids.len()], &gpu).unwrap();
    assert!(x.to_vec::<i32>().unwrap() == ids, "i32 upload differs");
}

#[test]
fn an_upload_reaches_the_gpu_before_work_recorded_after_it() {
    let Some(gpu) = gpu() else { return };
    // Large uploads between kernels that are recorded but not yet run, three times, so
    // that the staging chunks are written again while earlier copies may be pending:
    // behind a product that keeps the GPU busy, each upload's first chunk reaches its
    // turn again before the product has run.
    let n = 20 * MIB / 4 + 7;
    let ones = Tensor::ones([512, 512], kiln::DType::F32, &gpu).unwrap();
    let mut busy = Vec::new();
    let mut total = Tensor::zeros([n], kiln::DType::F32, &gpu).unwrap();
    let mut want = vec![0.0f32; n];
    for round in 0..3 {
        busy.push(ones.matmul(&ones).unwrap());
        let a = values(n, 2 * round);
        let b = values(n, 2 * round + 1);
        let doubled = Tensor::from_slice(&a, [n], &gpu)
            .unwrap()
            .mul_scalar(2.0)
            .unwrap();
        let sum = Tensor::from_slice(&b, [n], &gpu)
            .unwrap()
            .add(&doubled)
            .unwrap();
        total = total.add(&sum).unwrap();
        for i in 0..n {
            want[i] += b[i] + 2.0 * a[i];
        }
    }
    let got = total.to_vec::<f32>().unwrap();
    assert!(
        bits(&got) == bits(&want),
        "uploads and kernels ran out of order"
    );
    for product in busy {
        assert!(product.to_vec::<f32>().unwrap().iter().all(|&v| v == 512.0));
    }
}

#[test]
fn mapped_readbacks_give_what_to_vec_gives() {
    let Some(gpu) = gpu() else { return };
    fn sendable<T: Send + Sync>(_: &T) {}
    let mut rng = rng();
    // Compact and strided (copied compact on the GPU first), empty, past a staging
    // chunk, and each dtype.
    for (n, salt) in [(0, 1), (1, 2), (1000, 3), (3 * MIB, 4)] {
        let x = Tensor::from_slice(&values(n, salt), [n], &gpu).unwrap();
        let mapped = x.read_host::<f32>().unwrap();
        sendable(&mapped);
        assert!(
            bits(&mapped) == bits(&x.to_vec::<f32>().unwrap()),
            "{n} f32"
        );
    }
    let strided = on_strided(&gpu, &rand(&[37, 29], &mut rng));
    let want = strided.to_vec::<f32>().unwrap();
    assert!(bits(&strided.read_host::<f32>().unwrap()) == bits(&want));
    let halves = strided.to_dtype(DType::F16).unwrap();
    assert_eq!(
        &halves.read_host::<f16>().unwrap()[..],
        &halves.to_vec::<f16>().unwrap()[..]
    );
    let ids = Tensor::from_vec((0..1001).collect::<Vec<i32>>(), [7, 143], &gpu).unwrap();
    let ids = ids.t().unwrap();
    assert_eq!(
        &ids.read_host::<i32>().unwrap()[..],
        &ids.to_vec::<i32>().unwrap()[..]
    );
    assert!(matches!(
        ids.read_host::<f32>(),
        Err(Error::DTypeMismatch {
            op: "read_host",
            ..
        })
    ));
    // The CPU backend's copy.
    let cpu = rand(&[5, 3], &mut rng);
    assert_eq!(
        &cpu.read_host::<f32>().unwrap()[..],
        &cpu.to_vec::<f32>().unwrap()[..]
    );
}

#[test]
fn readbacks_while_a_mapped_one_is_held() {
    let Some(gpu) = gpu() else { return };
    let a = Tensor::from_slice(&values(2 * MIB, 5), [2 * MIB], &gpu).unwrap();
    let b = Tensor::from_slice(&values(MIB, 6), [MIB], &gpu).unwrap();
    let c = Tensor::from_slice(&values(4 * MIB, 7), [4 * MIB], &gpu).unwrap();
    // Held across other readbacks, which stage through buffers of their own, and
    // across work recorded after it; dropped out of order, each gives its buffer back.
    let held_a: HostRead<f32> = a.read_host().unwrap();
    let held_b: HostRead<f32> = b.read_host().unwrap();
    let doubled = a.mul_scalar(2.0).unwrap().to_vec::<f32>().unwrap();
    drop(held_a);
    let held_c: HostRead<f32> = c.read_host().unwrap();
    assert!(bits(&held_b) == bits(&values(MIB, 6)));
    assert!(bits(&held_c) == bits(&values(4 * MIB, 7)));
    drop(held_b);
    drop(held_c);
    let want: Vec<f32> = values(2 * MIB, 5).iter().map(|v| v * 2.0).collect();
    assert!(bits(&doubled) == bits(&want));
    // The buffers given back serve the next readbacks, large and small.
    for (t, n, salt) in [(&c, 4 * MIB, 7), (&b, MIB, 6), (&a, 2 * MIB, 5)] {
        assert!(bits(&t.read_host::<f32>().unwrap()) == bits(&values(n, salt)));
        assert!(bits(&t.to_vec::<f32>().unwrap()) == bits(&values(n, salt)));
    }
}
