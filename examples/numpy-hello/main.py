"""Print numpy's version and a small verified computation."""

import platform

import numpy as np

a = np.arange(12, dtype=np.float64).reshape(3, 4)
checksum = float((a @ a.T).sum())
assert checksum == 1134.0, checksum
print(f"hello from numpy {np.__version__} on {platform.machine()}: checksum {checksum:.0f}")
