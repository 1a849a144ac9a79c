"""The ``gpuship`` command: a thin Typer shell over the library. One module per verb group."""
