"""Show that the conda environment's packages import in the image."""

import click
import numpy
import yaml

print(f"conda env ok: numpy {numpy.__version__}, pyyaml {yaml.__version__}, click {click.__version__}")
