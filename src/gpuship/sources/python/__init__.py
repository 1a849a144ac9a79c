"""The Python environment of an image: lock with uv, install for a target platform, prune -> Layers."""
