//! `kiln info`: the adapters wgpu sees, their key limits and features, and the device
//! kiln would choose.

use kiln::backend::{
    autotune_cache_path, list_adapters, read_autotune_cache, AttentionSplit, AttentionWay,
    ConvAlgorithm, GpuDevice, RowReduction,
};
use kiln::Device;

pub fn run() -> kiln::Result<()> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        println!("No GPU adapters found (install Mesa's lavapipe: apt-get install -y mesa-vulkan-drivers).");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("adapter {i}: {}", a.name);
        println!(
            "  backend: {}   type: {}   driver: {}",
            a.backend, a.device_type, a.driver
        );
        println!(
            "  max storage binding: {} MiB   max buffer: {} MiB   workgroup storage: {} KiB",
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            a.max_compute_workgroup_storage_size >> 10
        );
        println!(
            "  invocations per workgroup: {}   workgroups per dim: {}   storage buffers per kernel: {}",
            a.max_compute_invocations_per_workgroup,
            a.max_compute_workgroups_per_dimension,
            a.max_storage_buffers_per_shader_stage
        );
        println!(
            "  shader-f16: {}   subgroups: {}   timestamp queries: {}",
            a.shader_f16, a.subgroups, a.timestamp_query
        );
        if !a.cooperative_matrices.is_empty() {
            println!(
                "  cooperative matrices: {}",
                a.cooperative_matrices.join(", ")
            );
        }
    }
    autotune_cache();
    if !adapters.is_empty() {
        kernel_choices();
    }
    println!(
        "CPU backend threads: {} (KILN_NUM_THREADS sets them)",
        kiln::backend::cpu_threads()
    );
    match Device::best() {
        Ok(Device::Gpu(g)) => println!(
            "kiln would use: {} ({})",
            g.summary().name,
            g.summary().backend
        ),
        Ok(Device::Cpu) => {
            let why = if adapters.is_empty() {
                "no GPU adapter"
            } else {
                "the adapters found are software emulations; KILN_DEVICE=gpu forces one"
            };
            println!("kiln would use: the CPU backend ({why})")
        }
        Err(e) => println!("kiln would use: none ({e})"),
    }
    Ok(())
}

/// On the adapter kiln opens for the GPU: how the row kernels combine their lanes, how
/// convolutions and attention run, and whether small products share launches.
fn kernel_choices() {
    let gpu = match GpuDevice::new() {
        Ok(gpu) => gpu,
        Err(e) => return println!("row kernels and convolutions: no GPU device ({e})"),
    };
    let name = &gpu.summary().name;
    if gpu.summary().is_software() && !gpu.is_software() {
        println!("kernels on {name}: a hardware GPU's (KILN_AS_HARDWARE=1)");
    }
    let how = match (gpu.row_reduction(), gpu.subgroup_size()) {
        (RowReduction::Subgroup, Ok(size)) => format!("subgroup shuffles, subgroups of {size}"),
        (_, Err(e)) => format!("workgroup memory ({e})"),
        (RowReduction::Workgroup, Ok(_)) => "workgroup memory".to_string(),
    };
    println!("row kernels on {name}: {how}");
    let convs = match gpu.conv_algorithm() {
        ConvAlgorithm::Autotune => format!(
            "autotuned per shape class (unfold or implicit), {} when too small to tune",
            gpu.fixed_conv_algorithm().name()
        ),
        a => format!("{} (KILN_CONV or KILN_AUTOTUNE=0)", a.name()),
    };
    println!("convolutions on {name}: {convs}");
    let attention = match gpu.attention_way() {
        AttentionWay::Autotune => {
            "autotuned per shape class: fused kernels (f32 heads of up \
            to 64 features) or composed from products and a softmax"
        }
        AttentionWay::Fused => {
            "fused kernels for f32 heads of up to 64 features, composed \
            past them (KILN_ATTENTION or KILN_AUTOTUNE=0)"
        }
        AttentionWay::Composed => "composed from products and a softmax (KILN_ATTENTION)",
    };
    println!("attention on {name}: {attention}");
    let split = match gpu.attention_split() {
        AttentionSplit::Autotune => {
            "autotuned per kernel and shape class: one invocation a row, or split into lanes"
        }
        AttentionSplit::Whole => "one invocation a row (KILN_ATTENTION_SPLIT or KILN_AUTOTUNE=0)",
        AttentionSplit::Split => "rows split into lanes (KILN_ATTENTION_SPLIT)",
    };
    println!("fused attention rows on {name}: {split}");
    let groups = match (gpu.matmul_groups(), gpu.is_software()) {
        (true, _) => "small pending products several to a launch (KILN_MATMUL_GROUPS=0: one each)",
        (false, true) => {
            "one each, as on software adapters (KILN_MATMUL_GROUPS=1: several to a launch)"
        }
        (false, false) => "one each (KILN_MATMUL_GROUPS=0)",
    };
    println!("matmul launches on {name}: {groups}");
    // Each bind group carries a kernel's or a fused part's params.
    println!(
        "bind groups per kernel on {name}: {} (fused expressions per launch; a fused \
         kernel's own group, prologues and epilogue)",
        gpu.kernel_groups()
    );
}

/// The autotuner's cache: where it is and what it holds, per adapter.
fn autotune_cache() {
    let Some(path) = autotune_cache_path() else {
        println!("autotune cache: none (no cache directory; KILN_CACHE_DIR sets one)");
        return;
    };
    let off = std::env::var("KILN_AUTOTUNE").as_deref() == Ok("0");
    let state = if off {
        " (KILN_AUTOTUNE=0: not used)"
    } else {
        ""
    };
    match read_autotune_cache(&path) {
        Ok(entries) if entries.is_empty() => {
            println!("autotune cache: {} (empty){state}", path.display())
        }
        Ok(entries) => {
            println!("autotune cache: {}{state}", path.display());
            for (adapter, classes) in entries {
                println!("  {adapter}:");
                for (class, variant) in classes {
                    println!("    {class:<40} {variant}");
                }
            }
        }
        Err(e) => println!("autotune cache: unreadable ({e})"),
    }
}
