"""What every benchmark report records about where it ran (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform

import torch


def machine(device: str = "cpu") -> dict:
    """The device, cores, intra-op threads, load and versions behind a measurement."""
    return {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
