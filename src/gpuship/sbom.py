"""An SPDX 2.3 JSON SBOM for a built image: Debian packages (from the dpkg status), Python distributions
(from their dist-info) and model files (Hugging Face repositories at their revision, fetched files and the
project's weights with their SHA-256), each with a package URL. Deterministic: the same image gives the same
document."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from . import __version__


@dataclass(frozen=True, order=True)
class Component:
    ecosystem: str  # "deb", "pypi", "huggingface" or "generic" (a model file)
    name: str
    version: str
    arch: str = ""
    #: generic: the file's sha256 (hex) and where it was fetched from (a redacted URL: no user, password, query)
    sha256: str = ""
    download: str = ""

    @property
    def purl(self) -> str:
        if self.ecosystem == "deb":
            q = f"?arch={self.arch}" if self.arch else ""
            return f"pkg:deb/debian/{self.name}@{self.version}{q}"
        if self.ecosystem == "huggingface":
            return f"pkg:huggingface/{quote(self.name, safe='/')}@{self.version}"
        if self.ecosystem == "generic":
            qs = [f"checksum=sha256:{self.sha256}"] if self.sha256 else []
            qs += [f"download_url={quote(self.download, safe='')}"] if self.download else []
            return f"pkg:generic/{quote(self.name, safe='')}" + (f"?{'&'.join(qs)}" if qs else "")
        return f"pkg:pypi/{re.sub(r'[-_.]+', '-', self.name).lower()}@{self.version}"


def _spdx_id(c: Component) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{c.ecosystem}-{c.name}-{c.version}")


def spdx_document(name: str, image_digest: str, components: Iterable[Component]) -> dict:
    comps = sorted(set(components))
    packages = [
        {
            "SPDXID": _spdx_id(c),
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "filesAnalyzed": False,
            **({"checksums": [{"algorithm": "SHA256", "checksumValue": c.sha256}]} if c.sha256 else {}),
            "externalRefs": [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": c.purl}
            ],
        }
        for c in comps
    ]
    root = {
        "SPDXID": "SPDXRef-image",
        "name": name,
        "versionInfo": image_digest,
        "downloadLocation": "NOASSERTION",
        "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
    }
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name}@{image_digest}",
        "documentNamespace": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'gpuship:' + image_digest)}",
        "creationInfo": {"created": "1970-01-01T00:00:00Z", "creators": [f"Tool: gpuship-{__version__}"]},
        "packages": [root, *packages],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": "SPDXRef-image",
            }
        ]
        + [
            {"spdxElementId": "SPDXRef-image", "relationshipType": "CONTAINS", "relatedSpdxElement": p["SPDXID"]}
            for p in packages
        ],
    }


def write_spdx(path, name: str, image_digest: str, components: Iterable[Component]) -> None:

    Path(path).write_text(json.dumps(spdx_document(name, image_digest, components), indent=2, sort_keys=True) + "\n")
