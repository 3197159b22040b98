"""PyTorch on CUDA, the anchor for `benches/gpu/check.sh`: the kernels of `kiln bench
--large` that have a peer key, on the same shapes, and the training steps of kiln's
built-in CNN and char transformer, on the same card in the same run.

Kernels are timed with CUDA events after warm-up, one event pair per run, median of the
runs; inputs are uniform in [-1, 1) (never zeros); matmul is f32 with TF32 off. Each
line is in the peer harness's format (`<backend> <kernel> <shape> <ms> ms <rate> <unit>`),
so `kiln bench-report --peer` pairs it with kiln's entry of the same key.

Training: the architectures of kiln-cli's models.rs and char_lm.rs (as
../shared/peers/pytorch-cpu mirrors them), PyTorch's default initialisation, Adam, one
fixed batch of random data of the real shapes (CNN: 64 images 1x28x28, 10 classes;
transformer: 32 windows of 64 characters, vocabulary 65). A step is forward, loss,
backward and the optimizer's update, with no read of the loss (as kiln's `fit` reads
it once per 32 steps); steps per second over timed steps after warm-up, synchronised
at both ends, median of three runs.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKEND = "pytorch-cuda"
# `--device cpu` only checks this script on a machine without CUDA (host clock).
DEVICE = "cuda"


def uniform(*shape):
    return torch.rand(*shape, device=DEVICE) * 2 - 1


def synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def kernel_ms(fn, warm=5, reps=20):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if DEVICE != "cuda":
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def line(kernel, shape, ms, rate, unit):
    print(f"{BACKEND} {kernel} {shape} {ms:.4f} ms {rate:.2f} {unit}", flush=True)


def kernels(large):
    squares = [256, 512, 1024, 2048] + ([4096] if large else [])
    for n in squares:
        a, b = uniform(n, n), uniform(n, n)
        ms = kernel_ms(lambda: torch.mm(a, b))
        line("matmul", f"n={n}", ms, 2 * n**3 / ms / 1e6, "GFLOP/s")
    rows = [(4096, 1024), (1024, 4096)] + ([(16384, 4096)] if large else []) + [(65536, 128)]
    for r, c in rows:
        x = uniform(r, c)
        ms = kernel_ms(lambda: torch.softmax(x, -1))
        line("softmax", f"{r}x{c}", ms, 8 * r * c / ms / 1e6, "GB/s")
        ms = kernel_ms(lambda: x.sum(-1))
        line("sum_dim", f"{r}x{c}", ms, 4 * r * c / ms / 1e6, "GB/s")
        if r >= c:
            ms = kernel_ms(lambda: F.layer_norm(x, (c,), eps=1e-5))
            line("layer_norm", f"{r}x{c}", ms, 8 * r * c / ms / 1e6, "GB/s")
    # Batch norm in training mode over a convolution's output, as kiln's bench counts it
    # (one read and one write).
    x = uniform(32, 64, 56, 56)
    ms = kernel_ms(lambda: F.batch_norm(x, None, None, training=True, eps=1e-5))
    line("batch_norm", "32x64x56x56", ms, 8 * x.numel() / ms / 1e6, "GB/s")
    x, w = uniform(16, 64, 32, 32), uniform(64, 64, 3, 3)
    ms = kernel_ms(lambda: F.conv2d(x, w, None, padding=1))
    line("conv2d", "16x64x32x32 k3", ms, 2 * 16 * 64 * 64 * 32 * 32 * 9 / ms / 1e6, "GFLOP/s")
    # Its training pass: forward, then the input's and the weight's gradients.
    xg, wg, g = x.clone().requires_grad_(), w.clone().requires_grad_(), uniform(16, 64, 32, 32)
    ms = kernel_ms(lambda: torch.autograd.grad(F.conv2d(xg, wg, None, padding=1), (xg, wg), g))
    line("conv2d_fwd_bwd", "16x64x32x32 k3", ms, 3 * 2 * 16 * 64 * 64 * 32 * 32 * 9 / ms / 1e6, "GFLOP/s")
    # The card's copy bandwidth, counted as kiln's probe counts it (bytes read + written).
    size = 256 << 20
    src, dst = torch.empty(size // 4, device=DEVICE), torch.empty(size // 4, device=DEVICE)
    src.uniform_(-1, 1)
    ms = kernel_ms(lambda: dst.copy_(src))
    line("copy", "256MiB", ms, 2 * size / ms / 1e6, "GB/s")


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


class CharGPT(nn.Module):
    """Token and position embeddings, pre-norm causal blocks, final norm, linear head."""

    def __init__(self, vocab=65, embed=128, heads=4, layers=3, context=64):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.positions = nn.Embedding(context, embed)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                embed, heads, 4 * embed, dropout=0.0, activation="gelu",
                batch_first=True, norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, vocab)
        mask = nn.Transformer.generate_square_subsequent_mask(context)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.embedding(ids) + self.positions.weight[:t]
        for block in self.blocks:
            x = block(x, src_mask=self.causal[:t, :t], is_causal=True)
        return self.head(self.norm(x))


def steps_per_second(model, x, y, loss_fn, steps, warm=10):
    model = model.to(DEVICE).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warm):
        step()
    rates = []
    for _ in range(3):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def training(steps):
    x = torch.rand(64, 1, 28, 28, device=DEVICE)
    y = torch.randint(0, 10, (64,), device=DEVICE)
    rate = steps_per_second(cnn(), x, y, F.cross_entropy, steps)
    print(f"{BACKEND} train cnn batch 64: {rate:.1f} steps/s", flush=True)
    ids = torch.randint(0, 65, (32, 64), device=DEVICE)
    targets = torch.randint(0, 65, (32, 64), device=DEVICE)

    def lm_loss(logits, t):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1))

    rate = steps_per_second(CharGPT(), ids, targets, lm_loss, steps)
    print(f"{BACKEND} train transformer batch 32x64: {rate:.1f} steps/s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true", help="add matmul 4096 and 16384x4096 rows")
    ap.add_argument("--steps", type=int, default=50, help="timed training steps per run")
    ap.add_argument("--device", default="cuda", help="cpu: check the script without a GPU")
    args = ap.parse_args()
    global BACKEND, DEVICE
    DEVICE = args.device
    if DEVICE != "cuda":
        BACKEND = f"pytorch-{DEVICE}-dry-run"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    card = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print(f"# torch {torch.__version__}, CUDA {torch.version.cuda}, {card}; TF32 off", flush=True)
    kernels(args.large)
    training(args.steps)


if __name__ == "__main__":
    main()
