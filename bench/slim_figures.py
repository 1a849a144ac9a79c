"""``bench/run.py``'s hook for the size figures (built, arch-pruned, traced-slim, floor): see bench/sizes.py."""

from sizes import collect

__all__ = ["collect"]
