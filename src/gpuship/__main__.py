"""``python -m gpuship``: the same as the ``gpuship`` command."""

from .cli.app import main

main()
