"""gpuship: ship Python GPU workloads as minimal, reproducible OCI images without a Docker daemon.

The library is the product; the ``gpuship`` command is a thin shell over it.
"""

__version__ = "0.1.0"
