"""A training step's profile on CUDA, summarised for the benches (`stylegan2_speed.py --profile`, `gpu.py --profile`):
whether the GPU or the host bounds the step, and on what.

GPU kernel time a step against the step's unprofiled wall time (GPU busy), kernel launches and host syncs a step
(cudaStreamSynchronize: `.item()`, `.cpu()`, blocking host-to-device copies) with the host's time waiting in them,
the kernels that take the GPU's time and the operators that take the host's own time.
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
    # the kernels' own rows (an operator's row also carries the time of the kernels it launched)
    kernels = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.self_device_time_total, reverse=True)  # fmt: skip
    kernel_ms = sum(e.self_device_time_total for e in kernels) / 1000 / steps
    launches = sum(e.count for e in events if "LaunchKernel" in e.key) / steps
    syncs = [e for e in events if "Synchronize" in e.key]
    sync_count = sum(e.count for e in syncs) / steps
    sync_ms = sum(e.self_cpu_time_total for e in syncs) / 1000 / steps
    print(f"\n## Profile: {title}, {steps} steps\nGPU kernel time {kernel_ms:.2f} ms/step against "
          f"{1000 * wall_s:.2f} ms/step of wall time unprofiled (GPU busy {kernel_ms / (1000 * wall_s):.0%}); "
          f"{launches:.0f} kernel launches/step, {sum(e.count for e in kernels) / steps:.0f} kernels/step; "
          f"{sync_count:.1f} host syncs/step, the host waiting in them {sync_ms:.2f} ms/step")  # fmt: skip
    print("| kernel | ms/step | calls/step |\n|---|---|---|")
    for e in kernels[:rows]:
        print(f"| {e.key[:90]} | {e.self_device_time_total / 1000 / steps:.3f} | {e.count / steps:.0f} |")
    # the host's side: where its time goes between launches (a step the GPU waits on is bound by these)
    host = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e not in syncs),
                  key=lambda e: e.self_cpu_time_total, reverse=True)  # fmt: skip
    print("| host operator (self time) | ms/step | calls/step |\n|---|---|---|")
    for e in host[:10]:
        print(f"| {e.key[:90]} | {e.self_cpu_time_total / 1000 / steps:.3f} | {e.count / steps:.0f} |")
    return {
        "kernel_ms_per_step": kernel_ms,
        "wall_ms_per_step": 1000 * wall_s,
        "launches_per_step": launches,
        "syncs_per_step": sync_count,
        "sync_wait_ms_per_step": sync_ms,
        "top": [(e.key, e.self_device_time_total / 1000 / steps, e.count / steps) for e in kernels[:30]],
        "top_host": [(e.key, e.self_cpu_time_total / 1000 / steps, e.count / steps) for e in host[:30]],
    }
