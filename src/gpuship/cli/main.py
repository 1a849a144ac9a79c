"""The CLI with every verb registered (for code and tests that use ``app`` directly); the ``gpuship`` command
itself runs :func:`gpuship.cli.app.main`, which imports only the verb it is given."""

from __future__ import annotations

from .app import app, main, register

__all__ = ["app", "main"]

register()
