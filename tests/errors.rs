//! Bad input comes back as a structured `Err` naming the op and what was wrong, before
//! any GPU work; GPU-side failures (WGSL validation) come back as `Err` too.

mod common;

use kiln::{DType, Device, Error, GpuErrorKind, RunningStats, Tensor};

fn devices() -> Vec<Device> {
    let mut list = vec![Device::cpu()];
    list.extend(common::gpu());
    list
}

fn message(e: &Error) -> String {
    e.to_string()
}

#[test]
fn shape_errors_name_op_and_shapes() {
    for d in devices() {
        let a = Tensor::zeros([2, 3], DType::F32, &d).unwrap();
        let b = Tensor::zeros([4, 5], DType::F32, &d).unwrap();
        let e = a.add(&b).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }), "{e:?}");
        assert!(
            message(&e).contains("add")
                && message(&e).contains("[2, 3]")
                && message(&e).contains("[4, 5]"),
            "{e}"
        );
        let e = a.matmul(&a).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { op: "matmul", .. })
                && message(&e).contains("[2, 3]"),
            "{e}"
        );
        let e = a.reshape([7]).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { op: "reshape", .. }),
            "{e}"
        );
        let e = a.sum(&[2], false).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DimOutOfRange {
                    op: "sum",
                    dim: 2,
                    rank: 2
                }
            ),
            "{e}"
        );
        let e = Tensor::from_vec(vec![1.0f32; 5], [2, 3], &d).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ElementCount {
                    expected: 6,
                    got: 5,
                    ..
                }
            ),
            "{e}"
        );
        let w = Tensor::zeros([4, 2, 3, 3], DType::F32, &d).unwrap();
        let x = Tensor::zeros([1, 3, 8, 8], DType::F32, &d).unwrap();
        let e = x.conv2d(&w, None, Default::default()).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { op: "conv2d", .. }),
            "{e}"
        );
        let w = Tensor::zeros([4, 3, 3, 3], DType::F32, &d).unwrap();
        let zero_stride = kiln::Conv2dOptions {
            stride: (0, 1),
            ..Default::default()
        };
        let e = x.conv2d(&w, None, zero_stride).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "conv2d", .. }),
            "{e}"
        );
        let e = x
            .conv_transpose2d(&w.transpose(0, 1).unwrap(), None, zero_stride, (0, 0))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    op: "conv_transpose2d",
                    ..
                }
            ),
            "{e}"
        );
        let e = Tensor::zeros([1; 9], DType::F32, &d).unwrap_err();
        assert!(matches!(e, Error::RankTooLarge { rank: 9, .. }), "{e}");
        // batch_norm: [n, c, ..] with elements, more than one a channel (PyTorch's
        // "Expected more than 1 value per channel when training"), and [c] weight and
        // bias.
        let x = Tensor::zeros([4, 3, 2], DType::F32, &d).unwrap();
        let three = Tensor::ones([3], DType::F32, &d).unwrap();
        let two = Tensor::ones([2], DType::F32, &d).unwrap();
        for (input, weight, bias) in [
            (&three, None, None),
            (&Tensor::zeros([0, 3], DType::F32, &d).unwrap(), None, None),
            (&Tensor::ones([1, 3], DType::F32, &d).unwrap(), None, None),
            (
                &Tensor::ones([1, 3, 1, 1], DType::F32, &d).unwrap(),
                Some(&three),
                None,
            ),
        ] {
            let e = input.batch_norm(weight, bias, 1e-5).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidShape {
                        op: "batch_norm",
                        ..
                    }
                ),
                "{e}"
            );
        }
        for (weight, bias) in [(Some(&two), None), (Some(&three), Some(&two))] {
            let e = x.batch_norm(weight, bias, 1e-5).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::ShapeMismatch {
                        op: "batch_norm",
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
}

#[test]
fn dtype_errors() {
    for d in devices() {
        let f = Tensor::zeros([3], DType::F32, &d).unwrap();
        let i = Tensor::zeros([3], DType::I32, &d).unwrap();
        let e = f.add(&i).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DTypeMismatch {
                    op: "add",
                    lhs: DType::F32,
                    rhs: DType::I32
                }
            ),
            "{e}"
        );
        let e = i.exp().unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedDType {
                    op: "exp",
                    dtype: DType::I32,
                    ..
                }
            ),
            "{e}"
        );
        let e = i
            .reshape([1, 3])
            .unwrap()
            .batch_norm(None, None, 1e-5)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedDType {
                    op: "batch_norm",
                    dtype: DType::I32,
                    ..
                }
            ),
            "{e}"
        );
        let e = f.to_vec::<i32>().unwrap_err();
        assert!(
            matches!(e, Error::DTypeMismatch { op: "to_vec", .. }),
            "{e}"
        );
        let e = f.index_select(0, &f).unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedDType {
                    op: "index_select",
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn index_errors_leave_inputs_intact() {
    for d in devices() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], &d).unwrap();
        let bad = Tensor::from_vec(vec![0i32, 3], [2], &d).unwrap();
        let e = x.index_select(0, &bad).unwrap_err();
        assert!(
            matches!(
                e,
                Error::IndexOutOfRange {
                    op: "index_select",
                    index: 3,
                    size: 3
                }
            ),
            "{e}"
        );
        let e = x.narrow(0, 2, 2).unwrap_err();
        assert!(
            matches!(e, Error::IndexOutOfRange { op: "narrow", .. }),
            "{e}"
        );
        let neg = Tensor::from_vec(vec![-1i32], [1], &d).unwrap();
        assert!(matches!(
            neg.one_hot(4).unwrap_err(),
            Error::IndexOutOfRange { index: -1, .. }
        ));
        // Indices a kernel wrote (no bounds kept from the host) are checked too.
        let computed = bad
            .add(&Tensor::zeros([2], DType::I32, &d).unwrap())
            .unwrap();
        let e = x.index_select(0, &computed).unwrap_err();
        assert!(matches!(e, Error::IndexOutOfRange { index: 3, .. }), "{e}");
        let one = Tensor::from_vec(vec![0i32, 1], [2], &d).unwrap();
        let good = computed.sub(&one).unwrap(); // [0, 2]
        let picked = x.index_select(0, &good).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(picked, vec![1.0, 3.0]);
        // Nothing was lost: the input still reads back.
        assert_eq!(x.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    }
}

#[test]
fn device_mismatch_is_an_error() {
    let Some(gpu) = common::gpu() else { return };
    let a = Tensor::zeros([2], DType::F32, &Device::cpu()).unwrap();
    let b = Tensor::zeros([2], DType::F32, &gpu).unwrap();
    let e = a.add(&b).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { op: "add", .. }), "{e}");
    assert!(
        message(&e).contains("cpu") && message(&e).contains("gpu"),
        "{e}"
    );
    let e = a.matmul(&b.reshape([2, 1]).unwrap()).unwrap_err();
    assert!(
        matches!(e, Error::DeviceMismatch { op: "matmul", .. }),
        "{e}"
    );
}

#[test]
fn oversized_tensor_fails_before_dispatch() {
    let Some(gpu) = common::gpu() else { return };
    let limit = gpu
        .as_gpu()
        .unwrap()
        .summary()
        .max_storage_buffer_binding_size;
    let n = (limit / 4 + 1) as usize;
    let e = Tensor::zeros([n], DType::F32, &gpu).unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { op: "zeros", .. }), "{e}");
    assert!(message(&e).contains(&limit.to_string()), "{e}");
    // The device is still usable afterwards.
    let ok = Tensor::ones([4], DType::F32, &gpu)
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(ok.item::<f32>().unwrap(), 4.0);
}

#[test]
fn invalid_wgsl_is_an_error_not_a_panic() {
    let Some(gpu) = common::gpu() else { return };
    let g = gpu.as_gpu().unwrap();
    let e = g
        .compile_wgsl(
            "custom kernel",
            "broken",
            "@compute @workgroup_size(1) fn main( {",
            "main",
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Gpu {
                kind: GpuErrorKind::Validation,
                op: "custom kernel",
                ..
            }
        ),
        "{e}"
    );
    // Parses but fails validation: a read-only binding written to.
    let src = "@group(0) @binding(0) var<storage, read> x: array<f32>;\n@compute @workgroup_size(1) fn main() { x[0] = 1.0; }";
    let e = g
        .compile_wgsl("custom kernel", "read-only write", src, "main")
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Gpu {
                kind: GpuErrorKind::Validation,
                ..
            }
        ),
        "{e}"
    );
    let e = g
        .compile_wgsl(
            "custom kernel",
            "no entry",
            "@compute @workgroup_size(1) fn main() {}",
            "missing",
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Gpu {
                kind: GpuErrorKind::Validation,
                ..
            }
        ),
        "{e}"
    );
    // The device still works.
    let t = Tensor::arange(0.0, 5.0, 1.0, DType::F32, &gpu)
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(t.item::<f32>().unwrap(), 10.0);
}

#[test]
fn no_adapter_message_says_how_to_install_one() {
    let e = Error::NoAdapter {
        reason: "wgpu found no adapter".into(),
    };
    assert!(message(&e).contains("mesa-vulkan-drivers"), "{e}");
}

#[test]
fn impossible_sizes_are_errors_not_aborts() {
    let cpu = Device::cpu();
    let e = Tensor::zeros([usize::MAX / 2, 4], DType::F32, &cpu).unwrap_err();
    assert!(matches!(e, Error::InvalidShape { op: "zeros", .. }), "{e}");
    let e = Tensor::eye(usize::MAX / 4, DType::F32, &cpu).unwrap_err();
    assert!(matches!(e, Error::InvalidShape { op: "eye", .. }), "{e}");
    let e = Tensor::arange(0.0, 1e18, 1.0, DType::F32, &cpu).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "arange", .. }),
        "{e}"
    );
    let x = Tensor::zeros([2], DType::F32, &cpu).unwrap();
    let e = x.pad(&[(usize::MAX, 1)], 0.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "pad", .. }), "{e}");
    // Addressable but far beyond this machine's memory: an error, not an abort.
    let e = Tensor::zeros([1usize << 58], DType::F32, &cpu).unwrap_err();
    assert!(
        matches!(e, Error::HostOutOfMemory { op: "zeros", .. }),
        "{e}"
    );
}

/// Batch norm's running statistics that cannot take the batch's (a momentum outside
/// [0, 1], one tensor as both, another length, dtype or device, a view) are refused
/// before anything runs: the statistics keep their values.
#[test]
fn batch_norm_running_errors_leave_the_statistics_intact() {
    for d in devices() {
        let x = Tensor::ones([4, 3, 2], DType::F32, &d).unwrap();
        let mean = Tensor::zeros([3], DType::F32, &d).unwrap();
        let var = Tensor::ones([3], DType::F32, &d).unwrap();
        let longer = Tensor::ones([4], DType::F32, &d).unwrap();
        let half = Tensor::ones([3], DType::F16, &d).unwrap();
        let on_cpu = Tensor::ones([3], DType::F32, &Device::cpu()).unwrap();
        let wide = Tensor::ones([6], DType::F32, &d).unwrap();
        let view = wide.narrow(0, 1, 3).unwrap();
        // Mean, variance, momentum, and what the error says.
        type Case<'a> = (&'a Tensor, &'a Tensor, f64, &'static str);
        let mut cases: Vec<Case> = vec![
            (&mean, &var, 1.5, "momentum must be in [0, 1]"),
            (&mean, &var, f64::NAN, "momentum must be in [0, 1]"),
            (&var, &var, 0.1, "one tensor"),
            (&mean, &longer, 0.1, "[4]"),
            (&mean, &half, 0.1, "dtypes"),
            (&mean, &view, 0.1, "compact"),
        ];
        if d.is_gpu() {
            cases.push((&mean, &on_cpu, 0.1, "different devices"));
        }
        for (m, v, momentum, says) in cases {
            let running = RunningStats {
                mean: m,
                var: v,
                momentum,
            };
            let e = x.batch_norm_running(None, None, 1e-5, running).unwrap_err();
            assert!(message(&e).contains(says), "{d:?}: {e}");
            assert_eq!(mean.to_vec::<f32>().unwrap(), [0.0; 3], "{d:?}: {e}");
            for t in [&var, &longer, &wide] {
                assert!(
                    t.to_vec::<f32>().unwrap().iter().all(|&v| v == 1.0),
                    "{d:?}: {e}"
                );
            }
        }
    }
}

/// A moving average's bad input (decay outside [0, 1], a scale that is not finite, a
/// value of another shape, a view as the average) is refused before any average of
/// the call moves.
#[test]
fn moving_average_errors_leave_the_averages_intact() {
    for d in devices() {
        let average = Tensor::ones([3], DType::F32, &d).unwrap();
        let other = Tensor::ones([3], DType::F32, &d).unwrap();
        let value = Tensor::zeros([3], DType::F32, &d).unwrap();
        let longer = Tensor::zeros([4], DType::F32, &d).unwrap();
        let view = longer.narrow(0, 1, 3).unwrap();
        let good = (&other, &value, 1.0);
        // The updates, the decay, and what the error says.
        type Case<'a> = (&'a [(&'a Tensor, &'a Tensor, f64)], f64, &'static str);
        let cases: [Case; 5] = [
            (
                &[good, (&average, &value, 1.0)],
                1.5,
                "decay must be in [0, 1]",
            ),
            (
                &[good, (&average, &value, f64::NAN)],
                0.9,
                "scale must be finite",
            ),
            (
                &[good, (&average, &value, 1e300)],
                0.9,
                "scale must be finite",
            ),
            (&[good, (&average, &longer, 1.0)], 0.9, "[4]"),
            (&[good, (&view, &value, 1.0)], 0.9, "compact"),
        ];
        for (updates, decay, says) in cases {
            let e = Tensor::update_moving_averages(updates, decay).unwrap_err();
            assert!(message(&e).contains(says), "{d:?}: {e}");
            for t in [&average, &other] {
                assert_eq!(t.to_vec::<f32>().unwrap(), [1.0; 3], "{d:?}: {e}");
            }
            assert_eq!(longer.to_vec::<f32>().unwrap(), [0.0; 4], "{d:?}: {e}");
        }
    }
}
