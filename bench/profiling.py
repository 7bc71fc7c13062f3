"""A training step's profile on CUDA, summarised for the benches (`stylegan2_speed.py --profile`, `gpu.py --profile`):
whether the GPU or the host bounds the step, and on what.

GPU kernel time a step (and copies / fills apart) against the step's unprofiled wall time (GPU busy), kernel launches,
CUDA-graph replays and host syncs a step (cudaStreamSynchronize: `.item()`, `.cpu()`, blocking host-to-device copies;
cudaEventSynchronize: the loop reading a step's losses) with the host's time waiting in them, the kernels that take
the GPU's time and the operators that take the host's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def profiled(run: Callable[[], object], steps: int, wall_s: float, title: str, rows: int = 15) -> dict[str, Any]:
    """Profile `run` (which runs `steps` training steps and waits for the device), print the summary under `title`
    and return it; `wall_s` is a step's unprofiled wall time, measured by the caller."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
    events = prof.key_averages()
    gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    copies = [e for e in gpu if e.key.startswith(("Memcpy", "Memset"))]  # copies and fills, not kernels
    # the kernels' own rows (an operator's row also carries the time of the kernels it launched)
    kernels = sorted((e for e in gpu if e not in copies), key=lambda e: e.self_device_time_total, reverse=True)
    kernel_ms = sum(e.self_device_time_total for e in kernels) / 1000 / steps
    copy_ms = sum(e.self_device_time_total for e in copies) / 1000 / steps
    launches = sum(e.count for e in events if "LaunchKernel" in e.key) / steps
    graphs = sum(e.count for e in events if "cudaGraphLaunch" in e.key) / steps  # CUDA-graph replays
    # cudaStreamSynchronize: .item(), .cpu(), blocking copies; cudaEventSynchronize: the loop reading a step's
    # losses (`Stepper.settle`). The caller's final torch.cuda.synchronize (cudaDeviceSynchronize) is left out.
    syncs = [e for e in events if "cudaStreamSynchronize" in e.key or "cudaEventSynchronize" in e.key]
    sync_count = sum(e.count for e in syncs) / steps
    sync_ms = sum(e.self_cpu_time_total for e in syncs) / 1000 / steps
    print(f"\n## Profile: {title}, {steps} steps\nGPU kernel time {kernel_ms:.2f} ms/step (+ copies and fills "
          f"{copy_ms:.2f}) against {1000 * wall_s:.2f} ms/step of wall time unprofiled (GPU busy "
          f"{(kernel_ms + copy_ms) / (1000 * wall_s):.0%}); {launches:.0f} kernel launches and {graphs:.0f} CUDA-graph "
          f"replays a step, {sum(e.count for e in kernels) / steps:.0f} kernels a step; {sync_count:.1f} host syncs "
          f"a step, the host waiting in them {sync_ms:.2f} ms/step")  # fmt: skip
    print("| kernel | ms/step | calls/step |\n|---|---|---|")
    for e in kernels[:rows]:
        print(f"| {e.key[:90]} | {e.self_device_time_total / 1000 / steps:.3f} | {e.count / steps:.0f} |")
    # the host's side: where its time goes between launches (a step the GPU waits on is bound by these)
    host = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CPU and "Synchronize" not in e.key),
                  key=lambda e: e.self_cpu_time_total, reverse=True)  # fmt: skip
    print("| host operator (self time) | ms/step | calls/step |\n|---|---|---|")
    for e in host[:10]:
        print(f"| {e.key[:90]} | {e.self_cpu_time_total / 1000 / steps:.3f} | {e.count / steps:.0f} |")
    return {
        "kernel_ms_per_step": kernel_ms,
        "copy_ms_per_step": copy_ms,
        "wall_ms_per_step": 1000 * wall_s,
        "launches_per_step": launches,
        "graph_replays_per_step": graphs,
        "syncs_per_step": sync_count,
        "sync_wait_ms_per_step": sync_ms,
        "top": [(e.key, e.self_device_time_total / 1000 / steps, e.count / steps) for e in kernels[:30]],
        "top_host": [(e.key, e.self_cpu_time_total / 1000 / steps, e.count / steps) for e in host[:30]],
    }
