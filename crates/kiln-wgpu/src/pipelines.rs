//! Compute pipelines: each (kernel, dtypes) built once from its specialised WGSL and
//! cached for the life of the device.

use crate::device::GpuDevice;
use crate::kernels::Kernel;
use kiln_core::{DType, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// A built kernel: the pipeline and its bind group layout, fetched once (asking the
/// pipeline for it on every launch costs a registry entry each time).
pub(crate) struct Pipeline {
    pub(crate) compute: wgpu::ComputePipeline,
    /// One per bind group the kernel declares.
    pub(crate) layouts: Vec<wgpu::BindGroupLayout>,
    /// The bindings the kernel writes, as (group, binding), for profiles.
    pub(crate) written: Vec<(u32, u32)>,
}

impl Pipeline {
    fn new(compute: wgpu::ComputePipeline, bind_groups: u32, written: Vec<(u32, u32)>) -> Pipeline {
        let layouts = (0..bind_groups)
            .map(|g| compute.get_bind_group_layout(g))
            .collect();
        Pipeline {
            compute,
            layouts,
            written,
        }
    }
}

/// Bindings of group 0, as (group, binding).
pub(crate) fn in_group0(bindings: &[u32]) -> Vec<(u32, u32)> {
    bindings.iter().map(|&b| (0, b)).collect()
}

/// A kernel and the dtypes it was specialised to (at most two).
type PipelineKey = (Kernel, [Option<DType>; 2]);

/// Compute pipelines by kernel and dtypes.
pub(crate) type PipelineCache = HashMap<PipelineKey, Arc<Pipeline>>;

impl GpuDevice {
    /// Builds (once) the pipeline of `kernel` specialised to `dtypes`.
    pub(crate) fn pipeline(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
    ) -> Result<Arc<Pipeline>> {
        for &d in dtypes {
            if !self.supports(d) {
                return Err(Self::unsupported(op, d));
            }
        }
        let key = (kernel, [dtypes.first().copied(), dtypes.get(1).copied()]);
        if let Some(p) = self.inner.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let source = kernel.specialise(dtypes)?;
        let checked = kernel.bounds_checked();
        let compute = self.compile(op, kernel.file().0, &source, kernel.entry(), checked)?;
        let pipeline = Arc::new(Pipeline::new(
            compute,
            1,
            in_group0(kernel.written_bindings()),
        ));
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Builds generated WGSL (`bind_groups` groups, writing the bindings `written`)
    /// with the bounds-check policy of `like`, the kernel it was made from.
    pub(crate) fn build_pipeline(
        &self,
        op: &'static str,
        like: Kernel,
        source: &str,
        bind_groups: u32,
        written: Vec<(u32, u32)>,
    ) -> Result<Pipeline> {
        let checked = like.bounds_checked();
        let compute = self.compile(op, like.file().0, source, like.entry(), checked)?;
        Ok(Pipeline::new(compute, bind_groups, written))
    }

    /// Compiles WGSL into a compute pipeline, with wgpu's runtime bounds checks; a
    /// shader that fails to parse or validate comes back as
    /// `Err(Error::Gpu { kind: Validation, .. })`.
    pub fn compile_wgsl(
        &self,
        op: &'static str,
        label: &str,
        source: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        self.compile(op, label, source, entry, true)
    }

    /// `compile_wgsl`, with the bounds checks only when `checked`: for kiln's own
    /// kernels, as `Kernel::bounds_checked` decides.
    fn compile(
        &self,
        op: &'static str,
        label: &str,
        source: &str,
        entry: &str,
        checked: bool,
    ) -> Result<wgpu::ComputePipeline> {
        self.scoped(op, || {
            let descriptor = wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            };
            let module = if !checked {
                let mut checks = wgpu::ShaderRuntimeChecks::checked();
                checks.bounds_checks = false;
                // SAFETY: only kiln's kernels whose addresses follow from host-validated
                // shapes and strides, each covered by the parity tests
                // (`Kernel::bounds_checked`).
                unsafe {
                    self.inner
                        .device
                        .create_shader_module_trusted(descriptor, checks)
                }
            } else {
                self.inner.device.create_shader_module(descriptor)
            };
            self.inner
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(label),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })
    }
}
