"""Run inside the torch-status image on a GPU host (scripts/gpu-validation.sh device torch): the example's function
called directly, then a float32 matmul on the GPU checked against the same product on the CPU."""

import json

import torch
from torch_status.app import handle

print("handle({'n': 256}) ->", json.dumps(handle({"n": 256})))
gen = torch.Generator().manual_seed(0)
a = torch.randn(1024, 1024, generator=gen)
b = torch.randn(1024, 1024, generator=gen)
cpu = a @ b
gpu = (a.cuda() @ b.cuda()).cpu()
err = (gpu - cpu).abs().max().item()
ok = torch.allclose(gpu, cpu, rtol=1e-4, atol=1e-3)
name = torch.cuda.get_device_name(0)
verdict = "agrees" if ok else "DIFFERS"
print(f"matmul 1024x1024 float32 on {name} against the CPU: max abs difference {err:.2e} -> {verdict}")
raise SystemExit(0 if ok else 1)
