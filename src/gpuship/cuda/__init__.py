"""CUDA compatibility: the data (toolkits, drivers, PTX ISA, GPUs, framework wheels) and the planner.

``plan_gpu(requirements, GpuSettings.from_table(table), platform)`` picks the CUDA line for an image, rewrites
its requirements, and returns a :class:`GpuPlan` whose ``explain()`` says why.
"""

from .compat import (
    DriverVersion,
    cc_str,
    cuda_for_driver,
    cuda_for_ptx_isa,
    driver_jits_ptx,
    driver_ptx_isa,
    min_driver,
    min_driver_for_ptx_isa,
    ptx_isa,
    runs_on,
    sm,
    toolkit_builds_for,
)
from .gpus import Target, parse_target
from .plan import FrameworkArchs, GpuPlan, TorchChoice, plan_gpu
from .settings import GpuSettings

__all__ = [
    "DriverVersion",
    "FrameworkArchs",
    "GpuPlan",
    "GpuSettings",
    "Target",
    "TorchChoice",
    "cc_str",
    "cuda_for_driver",
    "cuda_for_ptx_isa",
    "driver_jits_ptx",
    "driver_ptx_isa",
    "min_driver",
    "min_driver_for_ptx_isa",
    "parse_target",
    "plan_gpu",
    "ptx_isa",
    "runs_on",
    "sm",
    "toolkit_builds_for",
]
