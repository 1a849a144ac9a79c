"""The one error type users see.

Every user-facing failure is a :class:`GpushipError` raised where the fact is known. It carries one line
that says what went wrong and, in ``hint``, what to do about it. The CLI renders it once, exit code 2. Neither
ever holds a credential: the userinfo of URLs and references is masked (:func:`gpuship.redact.redact`).
"""

from __future__ import annotations

from .redact import redact


class GpushipError(Exception):
    """A failure the user can act on: ``message`` says what, ``hint`` says what to do."""

    exit_code = 2
    #: lines the CLI shows above the error line (the end of a failed build's log); the error is still one line
    details: tuple[str, ...] = ()

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = redact(message)  # a URL's or reference's credentials never reach a message
        super().__init__(message)
        self.message = message
        self.hint = redact(hint) if hint else hint

    def line(self) -> str:
        """The single line shown to the user."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(GpushipError):
    """Bad project or ``[tool.gpuship]`` input."""


class ResolveError(GpushipError):
    """A package set (Debian or Python) that cannot be satisfied."""


class IntegrityError(GpushipError):
    """A download or archive whose hash, signature or structure is wrong."""


class ToolMissing(GpushipError):
    """An external program gpuship needs is not installed."""


class RegistryError(GpushipError):
    """A registry refused or failed a request. ``status`` is the HTTP status when it answered one; ``codes`` the
    error codes of the distribution error body (``{"errors": [{"code": "BLOB_UPLOAD_INVALID", ...}]}``), ``code``
    the first of them, ``detail`` the registry's own words."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status: int | None = None,
        codes: tuple[str, ...] = (),
        detail: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.codes = codes
        self.detail = detail

    @property
    def code(self) -> str | None:
        return self.codes[0] if self.codes else None


class GpuError(GpushipError):
    """A CUDA / driver / GPU combination that cannot work."""
