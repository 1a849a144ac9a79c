"""The OCI image core: values (:class:`Layer`, :class:`Image`, :class:`Index`), the reproducible tar writer,
and the small functions that make and combine them. Sinks and readers live in ``gpuship.oci.sinks`` /
``gpuship.oci.readers``."""

from .entry import Entry, clean_path, rebase_through_links
from .image import (
    History,
    Image,
    ImageConfig,
    Index,
    Platform,
    append_layers,
    empty_image,
    make_index,
    with_annotations,
    with_config,
    with_created,
    with_family,
)
from .layer import Layer, build_layer, cached_layer, cached_layer_meta, entries_from_dir, layer_from_dir
from .media import BlobCompression, Compression, Family

__all__ = [
    "BlobCompression",
    "Compression",
    "Entry",
    "Family",
    "History",
    "Image",
    "ImageConfig",
    "Index",
    "Layer",
    "Platform",
    "append_layers",
    "build_layer",
    "cached_layer",
    "cached_layer_meta",
    "clean_path",
    "empty_image",
    "entries_from_dir",
    "layer_from_dir",
    "make_index",
    "rebase_through_links",
    "with_annotations",
    "with_config",
    "with_created",
    "with_family",
]
