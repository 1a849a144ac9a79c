"""What must not ship in an app layer: credential files by name, and private keys by content.

Names. detect-secrets and gitleaks, the maintained secret scanners, match *contents* (their rules are
regexes over lines), so neither has a list of credential *file names* to adopt. The names here are the
credential files among gitrob's file signatures (michenriksen/gitrob, ``core/signatures.go``, MIT licence,
Copyright (c) 2014 Michael Henriksen), which shhgit and other scanners reuse, plus the tools' own documented
credential locations that a Python GPU project meets (cloud CLIs, Kubernetes, Terraform, package indexes,
model hubs). gitrob's broader signatures (``settings.py``, ``*.log``, ``*.sqlite``, shell rc files) are not
taken: they name files apps legitimately ship.

Contents. A file holding a private key is a secret whatever its name (``deploy_key``, ``bot.txt``): the
first :data:`CONTENT_LIMIT` bytes of every chosen file are searched with gitleaks' ``private-key`` rule
(gitleaks/gitleaks ``config/gitleaks.toml``, MIT licence, Copyright (c) 2019 Zachary Rice): a PEM or OpenSSH
``-----BEGIN ... PRIVATE KEY-----`` block with a body and its END line (PKCS#1, PKCS#8, EC, DSA, OpenSSH, PGP
``PRIVATE KEY BLOCK``); and PuTTY's ``PuTTY-User-Key-File-N:`` header.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

#: Credential files, matched against the file name and against the path (``*/`` + pattern) at any depth.
SECRET_PATTERNS = (
    # environment files and direnv
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    # private keys and keystores (gitrob: .pem, .pkcs12, .p12, .pfx, *_rsa, *_dsa, *_ed25519, *_ecdsa, .key,
    # .keypair, .jks, .psafe3, .keychain, .agilekeychain, .kwallet, otr.private_key)
    "*.pem",
    "*.key",
    "*.keypair",
    "*.p12",
    "*.pkcs12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.psafe3",
    "*.keychain",
    "*.agilekeychain",
    "*.kwallet",
    "*.kdbx",
    "*.ppk",
    "otr.private_key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*_rsa",
    "*_dsa",
    "*_ecdsa",
    "*_ed25519",
    ".ssh/*",
    ".gnupg/*",
    "secring.*",
    # login and token files
    ".netrc",
    "_netrc",
    ".git-credentials",
    ".pgpass",
    ".my.cnf",
    ".mylogin.cnf",
    ".vault-token",
    ".htpasswd",
    "proftpdpasswd",
    "token.txt",
    ".boto",
    ".s3cfg",
    "sftp-config.json",
    "credentials.xml",
    "recentservers.xml",
    "filezilla.xml",
    "robomongo.json",
    ".purple/accounts.xml",
    # shell and database client histories (gitrob: bash/zsh/sh history, mysql, psql, irb)
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".irb_history",
    ".node_repl_history",
    # package indexes and registries
    ".pypirc",
    "pip.conf",
    "pip.ini",
    ".npmrc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".dockercfg",
    ".docker/config.json",
    "containers/auth.json",  # podman, skopeo and buildah logins (REGISTRY_AUTH_FILE's usual place)
    ".dockerconfigjson",
    # clouds, clusters, infrastructure
    ".aws/*",
    ".azure/*",
    ".gcloud/*",
    "gcloud/*",
    "credentials",
    "credentials.json",
    "application_default_credentials.json",
    "service-account*.json",
    ".oci/config",
    ".databrickscfg",
    ".kube/config",
    "kubeconfig",
    "*.kubeconfig",
    "gh/hosts.yml",
    ".config/hub",
    "*.tfstate",
    "*.tfstate.backup",
    "*.tfvars",
    ".terraformrc",
    "terraform.rc",
    # model hubs and experiment trackers
    "huggingface/token",
    ".huggingface/token",
    "kaggle.json",
    # application secret stores
    "secrets.toml",
    "secrets.json",
    "secrets.yaml",
    "secrets.yml",
    "secret.json",
    "secret.yaml",
    "secret.yml",
)
#: Harmless look-alikes that are not secrets.
NOT_SECRETS = (".env.example", ".env.sample", ".env.template", ".env.dist", "*.pub")

#: How much of each file the content check reads (a key is at a file's start, or near it in a config).
CONTENT_LIMIT = 1 << 20
_PRIVATE_KEY = re.compile(
    rb"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S-]{64,}?KEY(?: BLOCK)?-----", re.IGNORECASE
)
_PUTTY_KEY = re.compile(rb"^PuTTY-User-Key-File-\d+: ", re.MULTILINE)


def looks_like_secret(rel: str) -> bool:
    """Whether the project file at ``rel`` (a relative POSIX path) has a credential file's name."""
    name = rel.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, p) for p in NOT_SECRETS):
        return False
    return any(
        fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, f"*/{p}") for p in SECRET_PATTERNS
    )


def holds_private_key(path: Path) -> bool:
    """Whether the file at ``path`` holds a private key (in its first :data:`CONTENT_LIMIT` bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(CONTENT_LIMIT)
    except OSError:
        return False
    if b"-----" not in head and b"PuTTY-User-Key-File-" not in head:
        return False  # the quick answer for almost every file
    return bool(_PRIVATE_KEY.search(head) or _PUTTY_KEY.search(head))
