"""What machine we run on: CPU model and int8-relevant ISA flags, threads, CUDA devices."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from bertpress.artifact import package_versions

# /proc/cpuinfo flag -> what we report. VNNI decides which int8 formats are fast (see compress).
ISA_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_info() -> dict[str, Any]:
    model, flags = _cpuinfo()
    isa = {name: flag in flags for flag, name in ISA_FLAGS.items()}
    isa["avx512"] = isa.pop("avx512f")
    isa["vnni"] = isa["avx512_vnni"] or isa["avx_vnni"]
    isa["amx"] = isa["amx_tile"] and isa["amx_int8"]
    # bf16 matmuls run natively (not emulated in fp32) with AVX512-BF16 or AMX-BF16 tiles.
    isa["bf16"] = isa["avx512_bf16"] or isa["amx_bf16"]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count() or 1
    return {"model": model, "arch": platform.machine(), "logical_cores": os.cpu_count(),
            "usable_cores": usable, "isa": isa}


def native_bf16_cpu() -> bool:
    """Whether this CPU runs PyTorch's bf16 matmuls natively (AVX512-BF16 or AMX-BF16, and a
    oneDNN that uses them). Without it they are emulated and 3-5x slower than fp32
    (docs/results/bf16-cpu.md), so bf16 is offered on the CPU only where this is True."""
    import torch

    if not cpu_info()["isa"]["bf16"]:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without the probe
        return False


def cuda_devices() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}"})
    return out


def info() -> dict[str, Any]:
    import torch

    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:  # pragma: no cover
        providers = []
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": package_versions(),
        "cpu": cpu_info(),
        "torch": {
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "quantized_engines": list(torch.backends.quantized.supported_engines),
        },
        "cuda": {"available": torch.cuda.is_available(), "devices": cuda_devices(),
                 "torch_cuda": torch.version.cuda},
        "onnxruntime_providers": providers,
    }


def info_text(data: dict[str, Any]) -> str:
    cpu, isa = data["cpu"], data["cpu"]["isa"]
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    lines = [
        f"bertpress {data['versions'].get('bertpress', '?')}  python {data['python']}  {data['platform']}",
        f"CPU       {cpu['model']} ({cpu['arch']}, {cpu['usable_cores']} usable of {cpu['logical_cores']} logical cores)",
        f"ISA       AVX2 {yes(isa['avx2'])}, AVX-512 {yes(isa['avx512'])}, VNNI {yes(isa['vnni'])} "
        f"(avx512_vnni {yes(isa['avx512_vnni'])}, avx_vnni {yes(isa['avx_vnni'])}), AMX {yes(isa['amx'])}, "
        f"bf16 {yes(isa['bf16'])} (avx512_bf16 {yes(isa['avx512_bf16'])}, amx_bf16 {yes(isa['amx_bf16'])})",
        f"torch     threads {data['torch']['threads']}, capability {data['torch']['cpu_capability']}, "
        f"qengines {', '.join(data['torch']['quantized_engines'])}",
        f"CUDA      {', '.join(d['name'] for d in data['cuda']['devices']) or 'none'}",
        f"ORT EPs   {', '.join(data['onnxruntime_providers'])}",
        "versions  " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()),
    ]
    return "\n".join(lines)
