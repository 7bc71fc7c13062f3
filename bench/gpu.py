"""Training throughput on one device, with and without mixed precision.

    python bench/gpu.py [--device cuda] [--kimg 2] [--dcgan-steps 50] [--json out.json]

- DCGAN 64x64 (64 channels, batch 64): images/s (generator updates x batch / s).
- StyleGAN2 256x256, the paper's config-f widths (`preset: paper`, z 512, batch 32, R1 every 16
  steps, path length every 4, style mixing 0.9): seconds per thousand real images shown to D
  (s/kimg), comparable with stylegan2-ada-pytorch's 21.6-24.2 s/kimg at 256x256 on one V100.
Each configuration is run for a few warm-up steps first; peak GPU memory is reported per run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from facegan.config import TrainConfig
from facegan.train.gan import GANTrainer as Trainer


def _trainer(cfg: TrainConfig, res: int, device: torch.device) -> Trainer:
    images = torch.randint(0, 256, (1024, 3, res, res), dtype=torch.uint8)
    if device.type == "cuda":
        images = images.pin_memory()
    return Trainer(cfg, images, None, [], device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg: TrainConfig, res: int, steps: int, warmup: int, device: torch.device) -> dict:
    t = _trainer(cfg, res, device)
    for _ in range(warmup):
        t.step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        t.step()
    _sync(device)
    sec = time.perf_counter() - t0
    images = steps * cfg.batch_size * cfg.n_critic
    return {"steps": steps, "seconds": round(sec, 3), "img_per_s": round(images / sec, 1),
            "s_per_kimg": round(sec / (images / 1000), 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def profile(res: int, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    cfg = TrainConfig(model="stylegan2", z_dim=512, batch_size=32, lr_g=0.002, lr_d=0.002, beta1=0.0, beta2=0.99,
                      device=str(device), stylegan2={"preset": "paper"}, r1={"every": 16}, path_length={"weight": 2, "every": 4})
    t = _trainer(cfg, res, device)
    for _ in range(3):
        t.step()
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(16):
            t.step()
        _sync(device)
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--kimg", type=float, default=2.0, help="StyleGAN2 images to time, in thousands")
    ap.add_argument("--dcgan-steps", type=int, default=50)
    ap.add_argument("--res", type=int, default=256, help="StyleGAN2 resolution")
    ap.add_argument("--amp", nargs="+", default=["off", "bf16", "fp16"])
    ap.add_argument("--pl-weight", type=float, default=2.0, help="StyleGAN2 path-length weight (0 = off)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of StyleGAN2 steps and exit")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    if args.profile:
        profile(args.res, device)
        return
    results: dict = {"device": name, "torch": torch.__version__, "dcgan64": {}, f"stylegan2_{args.res}": {}}
    for amp in args.amp:
        cfg = TrainConfig(model="dcgan", g_channels=64, d_channels=64, batch_size=64, amp=amp, device=args.device)
        r = measure(cfg, 64, args.dcgan_steps, 5, device)
        results["dcgan64"][amp] = r
        print(f"DCGAN 64x64 batch 64, amp {amp:4s}: {r['img_per_s']:8.1f} img/s   peak {r['peak_mem_gib']} GiB")
    for amp in args.amp:
        cfg = TrainConfig(model="stylegan2", z_dim=512, batch_size=32, lr_g=0.002, lr_d=0.002, beta1=0.0, beta2=0.99,
                          ema=0.999, amp=amp, device=args.device,
                          stylegan2={"preset": "paper"}, r1={"gamma": 10, "every": 16}, path_length={"weight": args.pl_weight,
                                                                                          "every": 4})
        steps = max(16, int(args.kimg * 1000 / cfg.batch_size) // 16 * 16)  # whole lazy-regularisation cycles
        r = measure(cfg, args.res, steps, 16, device)
        results[f"stylegan2_{args.res}"][amp] = r
        print(f"StyleGAN2 {args.res}x{args.res} config-f batch 32 (pl {args.pl_weight}), amp {amp:4s}: {r['s_per_kimg']:7.2f} s/kimg "
              f"({r['img_per_s']:.1f} img/s)   peak {r['peak_mem_gib']} GiB")
    base = results[f"stylegan2_{args.res}"].get("off")
    for amp, r in results[f"stylegan2_{args.res}"].items():
        if base and amp != "off":
            print(f"StyleGAN2 speed-up with {amp}: {base['s_per_kimg'] / r['s_per_kimg']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
