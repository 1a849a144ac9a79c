"""Making images smaller without breaking them: GPU architecture pruning (:mod:`.archs`) and traced slimming
(:mod:`.slim`, :mod:`.trace`, :mod:`.rules`)."""

from ..cuda.gpus import Target
from .archs import (
    ArchPruneReport,
    ArchSelection,
    LibraryPrune,
    PruneResult,
    arch_sort_key,
    gpu_json_fragment,
    prune_fatbins,
    prune_layer_entries,
    ptx_jits_on,
    sass_runs_on,
)
from .rules import Context, KeepSet, RootView, elf_links, keep_set
from .slim import LayerSlim, SlimOptions, SlimResult, rewrite_layers, slim_image, write_report
from .trace import Probe, RunOutcome, Trace, read_trace, traced_run

__all__ = [
    "ArchSelection",
    "Context",
    "KeepSet",
    "LayerSlim",
    "LibraryPrune",
    "Probe",
    "ArchPruneReport",
    "PruneResult",
    "RootView",
    "RunOutcome",
    "SlimOptions",
    "SlimResult",
    "Target",
    "Trace",
    "arch_sort_key",
    "elf_links",
    "gpu_json_fragment",
    "keep_set",
    "prune_fatbins",
    "prune_layer_entries",
    "ptx_jits_on",
    "read_trace",
    "rewrite_layers",
    "sass_runs_on",
    "slim_image",
    "traced_run",
    "write_report",
]
