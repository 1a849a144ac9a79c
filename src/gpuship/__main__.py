"""``python -m gpuship``: the same as the ``gpuship`` command."""

from .cli.entry import main

main()
