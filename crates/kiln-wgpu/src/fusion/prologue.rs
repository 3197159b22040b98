//! Prologue fusion: a kernel whose input is pending computes it in its loads, so the
//! input is never written out. Kernels opt in with load sections (`wgsl`). Launching a
//! kernel with prologues and an epilogue (`epilogue`).

use super::epilogue::{epilogue_read, Epilogue};
use super::expr::FusedOp;
use super::program::{Program, ReadKind};
use super::wgsl::{self, FusedParams};
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::ShaderParams;
use crate::pipelines::{in_group0, Pipeline};
use crate::storage::GpuStorage;
use kiln_core::{DType, Result};
use std::fmt::Write;
use std::sync::Arc;

/// Whether `kernel` should compute `program` in its loads rather than read it. A
/// matmul loads each operand element once per tile of the other operand, so its
/// prologue runs that many times: it takes copies (a compact copy of a view, such as
/// attention heads), not arithmetic. On lavapipe a gelu or a sum of pads in a matmul's
/// loads cost more than the launch it saved.
///
/// No kernel inlines a program that can be a deferred launch's epilogue: run as the
/// epilogue, it is computed once and written once, where as a prologue it would be
/// computed again by each kernel that reads it and by the kernel that writes it for
/// whoever holds it (a transformer's residual sum, which its next layer norm reads
/// and autograd keeps; an LSTM's gates). The cost is a buffer for such a result while
/// autograd holds it (the char LSTM's peak memory +5%).
fn worth_inlining(kernel: Kernel, program: &Program) -> bool {
    if epilogue_read(program).is_some() {
        return false;
    }
    match kernel {
        Kernel::Matmul
        | Kernel::MatmulSmallTiled
        | Kernel::MatmulBlocked
        | Kernel::Conv2dImplicit
        | Kernel::Conv2dImplicitSmallTiled
        | Kernel::Conv2dImplicitBlocked
        | Kernel::ConvWeightGradImplicit
        | Kernel::ConvWeightGradImplicitSmallTiled
        | Kernel::ConvWeightGradImplicitBlocked => {
            let copies = program.steps.iter().all(|s| s.op == FusedOp::Cast);
            let padded = program.reads.iter().any(|r| r.kind() == ReadKind::Padded);
            copies && !padded
        }
        _ => true,
    }
}

impl GpuDevice {
    /// The program `kernel` would compute its `j`-th input `input` by in its loads (a
    /// prologue), limits on bindings aside; `None` for an input it binds.
    fn prologue(&self, kernel: Kernel, j: usize, input: &GpuStorage) -> Result<Option<Program>> {
        if !self.fusion() || j >= wgsl::load_sections(kernel).len() {
            return Ok(None);
        }
        let expr = input.data.expr.lock().unwrap().clone();
        let program = match expr {
            // Over its bounds, it runs as its own kernel first.
            Some(e) => match Program::lower_within(&e, self.max_fused_reads())? {
                Some(program) => program,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        Ok(worth_inlining(kernel, &program).then_some(program))
    }

    /// Runs the pending inputs of a launch of `kernel` that it would read from their
    /// buffers rather than compute in its loads (limits aside), as the launch would
    /// before it ran.
    pub(crate) fn run_bound_inputs(&self, kernel: Kernel, inputs: &[GpuStorage]) -> Result<()> {
        for (j, input) in inputs.iter().enumerate() {
            if input.is_pending() && self.prologue(kernel, j, input)?.is_none() {
                input.buffer()?;
            }
        }
        Ok(())
    }

    /// Records a launch of `kernel` whose bindings 1, 2, ... are `inputs` (each read at
    /// element indices below its length) and whose later bindings are `rest`, in
    /// order. Each pending input runs inside the kernel when the kernel has a load
    /// section for it and the buffers fit the stage's limit; the others are bound.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_with_inputs<P: ShaderParams>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &P,
        inputs: &[&GpuStorage],
        rest: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_fused(op, kernel, dtypes, params, inputs, rest, groups, None)
    }

    /// `dispatch_with_inputs`, and with an epilogue, the kernel's store section
    /// computing the epilogue's elements (its output binding holds the epilogue's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_fused<P: ShaderParams>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &P,
        inputs: &[&GpuStorage],
        rest: &[&wgpu::Buffer],
        groups: [u32; 3],
        epilogue: Option<Epilogue>,
    ) -> Result<()> {
        let start = std::time::Instant::now();
        // The kernel's own buffers, then each prologue's reads, within the limit.
        let limit = self.inner.limits.max_storage_buffers_per_shader_stage as usize;
        let mut bound = inputs.len() + rest.len();
        if let Some(e) = epilogue {
            bound += e.program.reads.len() - 1 + usize::from(e.out.is_some());
        }
        // Group 0, the prologues' groups, the epilogue's.
        let taken = 1 + usize::from(epilogue.is_some());
        let mut free_groups = self.inner.kernel_groups.saturating_sub(taken);
        let mut programs: Vec<Option<Program>> = Vec::with_capacity(inputs.len());
        for (j, input) in inputs.iter().enumerate() {
            let program = self
                .prologue(kernel, j, input)?
                .filter(|p| bound - 1 + p.reads.len() <= limit)
                .filter(|_| free_groups > 0);
            if let Some(p) = &program {
                bound = bound - 1 + p.reads.len();
                free_groups -= 1;
            }
            programs.push(program);
        }
        if programs.iter().all(Option::is_none) && epilogue.is_none() {
            let mut buffers = Vec::with_capacity(inputs.len() + rest.len());
            for input in inputs {
                buffers.push(input.raw()?);
            }
            buffers.extend_from_slice(rest);
            return self.dispatch(op, kernel, dtypes, params, &buffers, groups);
        }
        let given: Vec<Option<&Program>> = programs.iter().map(Option::as_ref).collect();
        let pipeline = self.fused_kernel_pipeline(kernel, dtypes, &given, epilogue)?;
        // Group 0: the inputs without a prologue at their bindings, then `rest`.
        let mut own = Vec::with_capacity(inputs.len() + rest.len());
        for (j, (input, program)) in inputs.iter().zip(&programs).enumerate() {
            if program.is_none() {
                own.push((j as u32 + 1, input.raw()?.as_entire_binding()));
            }
        }
        let first_rest = inputs.len() as u32 + 1;
        for (i, b) in rest.iter().enumerate() {
            own.push((first_rest + i as u32, b.as_entire_binding()));
        }
        let fused: Vec<FusedParams> = programs
            .iter()
            .flatten()
            .map(FusedParams::of)
            .collect::<Result<_>>()?;
        let reads: Vec<_> = programs
            .iter()
            .flatten()
            .map(Program::resources)
            .collect::<Result<_>>()?;
        let mut bind = vec![Bindings {
            params: bytemuck::bytes_of(params),
            resources: own,
            spans: Vec::new(),
            per_member: None,
        }];
        for ((f, r), p) in fused.iter().zip(&reads).zip(programs.iter().flatten()) {
            bind.push(Bindings::numbered(bytemuck::bytes_of(f), r, 1).spanning(p.read_spans(1)));
        }
        let epilogue_params = epilogue.map(|e| FusedParams::of(e.program)).transpose()?;
        if let (Some(e), Some(f)) = (epilogue, &epilogue_params) {
            let mut resources = e.program.resources_except(e.given)?;
            if let Some(out) = e.out {
                let binding = e.program.reads.len() as u32 + 1;
                resources.push((binding, out.as_entire_binding()));
            }
            bind.push(Bindings {
                params: bytemuck::bytes_of(f),
                resources,
                spans: e.program.read_spans(1),
                per_member: None,
            });
        }
        let name = || {
            let mut name = format!("{} {dtypes:?}", kernel.label());
            for p in programs.iter().flatten() {
                let _ = write!(name, " + {}", p.summary());
            }
            if let Some(e) = epilogue {
                let _ = write!(name, " => {}", e.program.summary());
            }
            name
        };
        self.launch(op, &pipeline, &bind, groups, start, name)
    }

    /// Builds (once per kernel, dtypes and program structures) `kernel` with the
    /// given programs as its inputs' prologues, and the epilogue.
    fn fused_kernel_pipeline(
        &self,
        kernel: Kernel,
        dtypes: &[DType],
        programs: &[Option<&Program>],
        epilogue: Option<Epilogue>,
    ) -> Result<Arc<Pipeline>> {
        let mut key = format!("{kernel:?} {dtypes:?}");
        for p in programs {
            let _ = write!(key, " [{}]", p.map_or(String::new(), Program::key));
        }
        if let Some(e) = epilogue {
            let keeps = e.out.is_some();
            let _ = write!(key, " => {} {keeps} [{}]", e.given, e.program.key());
        }
        let prologues = programs.iter().flatten().count() as u32;
        let groups = 1 + prologues + u32::from(epilogue.is_some());
        let mut written = in_group0(kernel.written_bindings());
        // A kept output's epilogue writes the program's values after its reads.
        if let Some(e) = epilogue.filter(|e| e.out.is_some()) {
            written.push((prologues + 1, e.program.reads.len() as u32 + 1));
        }
        self.cached_pipeline(key, kernel, groups, written, || {
            wgsl::fused_kernel(kernel, dtypes, programs, epilogue)
        })
    }
}
