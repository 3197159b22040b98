//! Finding adapters and choosing one, honouring wgpu's usual environment variables:
//! `WGPU_BACKEND` (e.g. `vulkan`, `gl`), `WGPU_ADAPTER_NAME` (a case-insensitive
//! substring of the adapter's name) and `WGPU_POWER_PREF` (`high` or `low`).

use kiln_core::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What `kiln info` shows about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_workgroups_per_dimension: u32,
    /// Storage buffers one kernel may bind: how many pieces one `cat` launch takes,
    /// and how many parameters one optimizer launch updates.
    pub max_storage_buffers_per_shader_stage: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    /// The cooperative-matrix shapes the adapter offers through wgpu's experimental
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` (`16x16x16 F16 -> F32`: m, n and k, the
    /// operands' type, the accumulator's); empty without it. kiln does not use them
    /// yet: `kiln info` shows them so that a device check says what a card offers.
    pub cooperative_matrices: Vec<String>,
}

impl AdapterSummary {
    /// True for adapters that run on the CPU (Mesa's lavapipe, WARP, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.device_type == format!("{:?}", wgpu::DeviceType::Cpu)
    }

    pub(crate) fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        AdapterSummary {
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrices: match features
                .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            {
                true => adapter
                    .cooperative_matrix_properties()
                    .iter()
                    .map(|c| {
                        format!(
                            "{}x{}x{} {:?} -> {:?}",
                            c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type
                        )
                    })
                    .collect(),
                false => Vec::new(),
            },
        }
    }
}

/// The adapter `prefer_adapter` asked for; `usize::MAX` for none.
static PREFERRED: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Makes this process open the `index`-th (modulo their number) of the adapters as good
/// as the best one (its device type and backend) instead of the first: one GPU per
/// process on a machine with several, as data-parallel ranks need. Call it before the
/// first GPU tensor; `WGPU_ADAPTER_NAME` still takes precedence.
pub fn prefer_adapter(index: usize) {
    PREFERRED.store(index, Ordering::Relaxed);
}

pub(crate) fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Every adapter wgpu can see (after `WGPU_BACKEND` filtering), best first.
pub fn list_adapters() -> Vec<AdapterSummary> {
    ranked(adapters(&instance()))
        .iter()
        .map(AdapterSummary::of)
        .collect()
}

/// Orders adapters by preference: device type for the power preference, then native
/// APIs (Vulkan, Metal, DX12) before GL.
fn ranked(mut list: Vec<wgpu::Adapter>) -> Vec<wgpu::Adapter> {
    use wgpu::DeviceType::*;
    let low_power = wgpu::PowerPreference::from_env() == Some(wgpu::PowerPreference::LowPower);
    let type_rank = |t: wgpu::DeviceType| match (t, low_power) {
        (DiscreteGpu, false) | (IntegratedGpu, true) => 0,
        (IntegratedGpu, false) | (DiscreteGpu, true) => 1,
        (VirtualGpu, _) => 2,
        (Cpu, _) => 3,
        (Other, _) => 4,
    };
    let api_rank = |b: wgpu::Backend| u8::from(b == wgpu::Backend::Gl);
    list.sort_by_key(|a| {
        let info = a.get_info();
        (type_rank(info.device_type), api_rank(info.backend))
    });
    list
}

pub(crate) fn choose(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let list = ranked(adapters(instance));
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let wanted = wanted.to_lowercase();
        let names: Vec<String> = list.iter().map(|a| a.get_info().name).collect();
        return list
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
            .ok_or(Error::NoAdapter {
                reason: format!(
                    "no adapter's name contains WGPU_ADAPTER_NAME={wanted:?} (found {names:?})"
                ),
            });
    }
    let Some(best) = list.first().map(wgpu::Adapter::get_info) else {
        return Err(Error::NoAdapter {
            reason: "wgpu found no adapter".into(),
        });
    };
    let peers: Vec<wgpu::Adapter> = list
        .into_iter()
        .filter(|a| {
            let info = a.get_info();
            info.device_type == best.device_type && info.backend == best.backend
        })
        .collect();
    let index = match PREFERRED.load(Ordering::Relaxed) {
        usize::MAX => 0,
        preferred => preferred % peers.len(),
    };
    peers.into_iter().nth(index).ok_or(Error::NoAdapter {
        reason: "the preferred adapter disappeared".into(),
    })
}
