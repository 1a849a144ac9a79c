"""``python -m gpuship``: the same as the ``gpuship`` command."""

from .cli.main import main

main()
