"""The one timestamp every reproducible artefact uses (``SOURCE_DATE_EPOCH`` or 0), as ISO 8601."""

from __future__ import annotations

import datetime

from .oci.tarball import source_date_epoch


def created_timestamp() -> str:
    return datetime.datetime.fromtimestamp(source_date_epoch(), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
