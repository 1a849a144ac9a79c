"""Making images smaller without breaking them: GPU architecture pruning (:mod:`.archs`)."""

from .archs import (
    ArchSelection,
    LibraryPrune,
    PruneReport,
    PruneResult,
    Target,
    gpu_json_fragment,
    prune_fatbins,
    prune_layer_entries,
    ptx_jits_on,
    sass_runs_on,
)

__all__ = [
    "ArchSelection", "LibraryPrune", "PruneReport", "PruneResult", "Target", "gpu_json_fragment",
    "prune_fatbins", "prune_layer_entries", "ptx_jits_on", "sass_runs_on",
]
