"""Reference throughput of the seed's GPT-2-small training step in PyTorch.

Reimplements the model and optimizers described by the seed (tied embedding and
lm-head, rotary attention, pre-RMSNorm blocks, GELU MLP, Muon for block matrices,
AdamW for the head, bf16 autocast) to time one training step, eager and compiled.
Prints tokens/s and model-FLOP utilisation. Usage:
  python3 reference_gpt.py [--batch 64] [--seq 1024] [--steps 20] [--compile]
  CPU (fp32 throughout): --device cpu --fp32 --layers 4 --width 256 --vocab 4096 --seq 256 --batch 8

scripts/bench-cpu.sh and scripts/gpu-check.sh run it beside `stacklab bench`. --heads
(default width // 64) matches a config with other heads, such as configs/tiny.toml's 4
heads of 32. --eval times the seed's validation forward: no grad, loss only.

Memory on CUDA, in the same two quantities `stacklab bench --json` reports: the caching
allocator's peaks (max_allocated_gib = torch.cuda.max_memory_allocated, max_reserved_gib)
and the whole device's use through NVML (nvml_used_gib: the CUDA context and the
allocator's reserve included; the largest of the samples after warm-up and at the end),
the device found by its PCI address.
"""
import argparse, ctypes, time, math
import torch, torch.nn as nn, torch.nn.functional as F

class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

def nvml_used_bytes(dev):
    """The whole device's memory in use (NVML) for CUDA device `dev`, or None."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
        p = torch.cuda.get_device_properties(dev)
        bus = f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0".encode()
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByPciBusId_v2(ctypes.c_char_p(bus), ctypes.byref(handle)) != 0:
            return None
        mem = _NvmlMemory()
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) != 0:
            return None
        return mem.used
    except (OSError, AttributeError, RuntimeError):
        return None

NS_DTYPE = torch.bfloat16

def ns5(G, steps=5, eps=1e-7):
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(NS_DTYPE) / (G.norm() + eps)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = A @ X
        X = a * X + b * B + c * A @ B
    if G.size(0) > G.size(1):
        X = X.T
    return X.to(G.dtype)

class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.95, ns=ns5):
        super().__init__(params, dict(lr=lr, momentum=momentum))
        self.ns = ns
    @torch.no_grad()
    def step(self):
        for g_ in self.param_groups:
            for p in g_["params"]:
                g = p.grad
                st = self.state[p]
                if "buf" not in st:
                    st["buf"] = torch.zeros_like(g)
                buf = st["buf"]
                buf.mul_(g_["momentum"]).add_(g)
                g = g.add(buf, alpha=g_["momentum"])
                if g.size(0) == 3 * g.size(1):
                    g = torch.cat([self.ns(x) for x in g.split(g.size(1))])
                    scale = g.size(1) ** 0.5
                else:
                    g = self.ns(g)
                    scale = max(g.size(0), g.size(1)) ** 0.5
                p.add_(g, alpha=-g_["lr"] * scale)

def rms(x):
    return F.rms_norm(x.float(), (x.size(-1),), eps=1e-6).type_as(x)

class Block(nn.Module):
    def __init__(s, d, h, L):
        super().__init__()
        s.h = h
        s.qkv = nn.Linear(d, 3 * d, bias=False)
        s.proj = nn.Linear(d, d, bias=False)
        s.fc = nn.Linear(d, 4 * d, bias=False)
        s.out = nn.Linear(4 * d, d, bias=False)
        s.scale = 1 / math.sqrt(2 * L)
    def attn(s, x, cos, sin):
        B, T, C = x.shape
        q, k, v = s.qkv(x).view(B, T, 3, s.h, C // s.h).unbind(2)
        def rot(t):
            d = t.size(-1) // 2
            t1, t2 = t[..., :d], t[..., d:]
            return torch.cat([t1 * cos + t2 * sin, -t1 * sin + t2 * cos], -1)
        q, k = rot(q), rot(k)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return s.proj(y.transpose(1, 2).reshape(B, T, C))
    def forward(s, x, cos, sin):
        x = x + s.scale * s.attn(rms(x), cos, sin)
        return x + s.out(F.gelu(s.fc(rms(x))))

class GPT(nn.Module):
    def __init__(s, V=50304, L=12, d=768, h=12, T=1024):
        super().__init__()
        s.head = nn.Linear(d, V, bias=False)
        s.wte = nn.Embedding(V, d)
        s.wte.weight = s.head.weight
        s.blocks = nn.ModuleList([Block(d, h, L) for _ in range(L)])
        hd = d // h
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(T).float(), inv)
        s.register_buffer("cos", f.cos()[None, :, None, :], persistent=False)
        s.register_buffer("sin", f.sin()[None, :, None, :], persistent=False)
    def forward(s, idx, tgt):
        x = s.wte(idx)
        T = idx.size(1)
        cos, sin = s.cos[:, :T], s.sin[:, :T]
        for b in s.blocks:
            x = b(x, cos, sin)
        x = rms(x)
        logits = s.head(x).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.reshape(-1))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--heads", type=int, default=None, help="attention heads (default width // 64)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--fp32", action="store_true", help="no bf16 anywhere (what a CPU run should use)")
    ap.add_argument("--eval", action="store_true", help="forward only, no grad, fp32 with TF32 matmuls: the seed's validation pass")
    a = ap.parse_args()
    dev = a.device
    global NS_DTYPE
    if a.fp32:
        NS_DTYPE = torch.float32
    torch.manual_seed(0)
    m = GPT(a.vocab, a.layers, a.width, a.heads or a.width // 64, a.seq).to(dev)
    adam = torch.optim.AdamW(m.head.parameters(), lr=3.6e-3, betas=(0.9, 0.95), weight_decay=0, fused=dev.startswith("cuda"))
    ns = torch.compile(ns5) if a.compile else ns5
    muon = Muon(m.blocks.parameters(), lr=3.6e-4, ns=ns)
    fwd = torch.compile(m) if a.compile else m
    idx = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device=dev)
    x, y = idx[:, :-1], idx[:, 1:]
    def step():
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=not a.fp32):
            loss = fwd(x, y)
        loss.backward()
        adam.step(); muon.step()
        m.zero_grad(set_to_none=True)
        return loss
    if a.eval:
        torch.set_float32_matmul_precision("high")
        m.eval()
        def step():
            with torch.no_grad():
                return fwd(x, y)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    t0 = time.time()
    for _ in range(a.warmup):
        loss = step()
    sync()
    warm = time.time() - t0
    cuda = dev.startswith("cuda")
    nvml = [nvml_used_bytes(torch.device(dev))] if cuda else []
    t0 = time.time()
    for _ in range(a.steps):
        loss = step()
    sync()
    dt = (time.time() - t0) / a.steps
    if cuda:
        nvml.append(nvml_used_bytes(torch.device(dev)))
    n_params = sum(p.numel() for p in m.parameters())
    flops_tok = 6 * n_params + 12 * a.layers * a.width * a.seq
    tok = a.batch * a.seq
    gib = lambda b: f"{b / 2**30:.2f}" if b is not None else "n/a"
    if cuda:
        used = [b for b in nvml if b is not None]
        mem = (f"max_allocated_gib={gib(torch.cuda.max_memory_allocated())} "
               f"max_reserved_gib={gib(torch.cuda.max_memory_reserved())} "
               f"nvml_used_gib={gib(max(used) if used else None)}")
    else:
        mem = "max_allocated_gib=n/a max_reserved_gib=n/a nvml_used_gib=n/a"
    if a.eval:
        flops_tok = 2 * n_params + 4 * a.layers * a.width * a.seq
    print(f"RESULT mode={'compiled' if a.compile else 'eager'}{'-fp32' if a.fp32 else ''}{'-eval' if a.eval else ''} device={dev} threads={torch.get_num_threads()} batch={a.batch} seq={a.seq} layers={a.layers} heads={a.heads or a.width // 64} "
          f"params={n_params/1e6:.1f}M step_ms={dt*1e3:.1f} tok_s={tok/dt:,.0f} "
          f"tflops={flops_tok*tok/dt/1e12:.1f} mfu_989={flops_tok*tok/dt/989e12*100:.1f}% "
          f"warmup_s={warm:.1f} {mem} loss={loss.item():.3f}")

if __name__ == "__main__":
    main()
