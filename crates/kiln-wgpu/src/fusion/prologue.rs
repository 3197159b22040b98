//! Prologue fusion: a kernel whose input is pending computes it in its loads, so the
//! input is never written out. Kernels opt in with a `kiln:load` section (`wgsl`).

use super::program::Program;
use super::wgsl::{self, FusedParams};
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::ShaderParams;
use crate::pipelines::Pipeline;
use crate::storage::GpuStorage;
use kiln_core::{DType, Result};
use std::sync::Arc;

impl GpuDevice {
    /// Records a launch of `kernel`, whose binding 1 is `input` (read compact, at
    /// element indices below its length) and whose later bindings are `rest`, in
    /// order. A pending input runs inside the kernel when the kernel takes prologues;
    /// otherwise its buffer is bound.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_with_input<P: ShaderParams>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &P,
        input: &GpuStorage,
        rest: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let pending = match self.fusion() && wgsl::takes_prologue(kernel) {
            true => input.data.expr.lock().unwrap().clone(),
            false => None,
        };
        let start = std::time::Instant::now();
        let program = match pending {
            Some(expr) => Some(Program::lower(&expr, self.max_fused_reads())?),
            None => None,
        };
        // The prologue's reads and the kernel's own buffers share the stage's limit.
        let limit = self.inner.limits.max_storage_buffers_per_shader_stage as usize;
        let fits = |p: &Program| p.reads.len() + rest.len() <= limit;
        let Some(program) = program.filter(fits) else {
            let mut buffers = vec![input.raw()?];
            buffers.extend_from_slice(rest);
            return self.dispatch(op, kernel, dtypes, params, &buffers, groups);
        };
        let pipeline = self.prologue_pipeline(kernel, dtypes, &program)?;
        let fused = FusedParams::of(&program)?;
        let reads = program.resources()?;
        let own: Vec<_> = rest.iter().map(|b| b.as_entire_binding()).collect();
        let bind = [
            Bindings::numbered(bytemuck::bytes_of(params), &own, 2),
            Bindings::numbered(bytemuck::bytes_of(&fused), &reads, 1),
        ];
        let name = || {
            let (file, _) = kernel.file();
            format!(
                "{file}:{} {dtypes:?} + {}",
                kernel.entry(),
                program.summary()
            )
        };
        self.launch(op, &pipeline, &bind, groups, start, name)
    }

    /// Builds (once per kernel, dtypes and program structure) `kernel` with the
    /// program as its prologue.
    fn prologue_pipeline(
        &self,
        kernel: Kernel,
        dtypes: &[DType],
        program: &Program,
    ) -> Result<Arc<Pipeline>> {
        let key = format!("{kernel:?} {dtypes:?} {}", program.key());
        if let Some(p) = self.inner.fused_pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let source = wgsl::with_prologue(kernel, dtypes, program)?;
        super::run::dump_kernel(&key, &source)?;
        let written = kernel.written_bindings();
        let pipeline = Arc::new(self.build_pipeline("fusion", kernel, &source, 2, written)?);
        let mut cache = self.inner.fused_pipelines.lock().unwrap();
        cache.insert(key, pipeline.clone());
        self.inner.fused_sources.lock().unwrap().push(source);
        Ok(pipeline)
    }
}
