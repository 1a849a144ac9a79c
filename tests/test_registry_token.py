"""Bearer-token registries (the Docker Hub / GHCR / nvcr.io flow): a real docker-registry with token auth and a
small token service on loopback. Anonymous pulls, scoped tokens, a token that expires mid-push, mount scopes,
and no secret in any log or output."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest

from gpuship.cache import Cache
from gpuship.errors import RegistryError
from gpuship.registry import ANONYMOUS, Credentials, pull_image, push
from test_registry_support import LocalRegistry, TokenServer, have_tools, make_image, secret

pytestmark = pytest.mark.registry

USER = "tokenuser"
PASSWORD = secret("token-pw")


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    have_tools()
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(root / "tokens", {USER: PASSWORD})
    reg = LocalRegistry(root / "reg", token=tokens).start()
    try:
        yield reg, tokens
    finally:
        reg.stop()
        tokens.close()


CREDS = Credentials(USER, PASSWORD)


def test_push_with_a_token_then_pull_anonymously(token_registry, cache, tmp_path):
    reg, tokens = token_registry
    img = make_image(cache, [{"etc/token": b"bearer\n"}])
    ref = f"{reg.host}/team/app:1"
    before = len(tokens.requests)
    result = push(img, ref, cache=cache, credentials=CREDS, insecure=True)
    assert result.uploaded == 2
    asked = tokens.requests[before:]
    assert asked and all(r["user"] == USER for r in asked)
    assert any("repository:team/app:pull,push" in r["scopes"] for r in asked)
    assert all(r["service"] == TokenServer.SERVICE for r in asked)

    got = pull_image(ref, "linux/amd64", Cache(tmp_path / "anon"), credentials=ANONYMOUS, insecure=True)
    assert got.digest == img.digest
    assert tokens.requests[-1]["user"] is None


def test_anonymous_push_says_to_log_in(token_registry, cache):
    reg, _ = token_registry
    img = make_image(cache, [{"etc/anon": b"a"}])
    with pytest.raises(RegistryError) as info:
        push(img, f"{reg.host}/team/anon:1", cache=cache, credentials=ANONYMOUS, insecure=True)
    assert "gpuship login" in info.value.line()


def test_wrong_password_at_the_token_service(token_registry, cache):
    reg, _ = token_registry
    img = make_image(cache, [{"etc/wrong": b"w"}])
    with pytest.raises(RegistryError, match="refused the credentials of user 'tokenuser'"):
        push(img, f"{reg.host}/team/wrong:1", cache=cache, credentials=Credentials(USER, "bad"), insecure=True)


class SleepAfterFirstChunk:
    """Progress hook: after the first chunk is sent, wait until the token has expired."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.sent, self.slept = seconds, 0, False

    def step(self, message: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        self.sent = done
        if not self.slept and self.sent >= 256 << 10:
            self.slept = True
            time.sleep(self.seconds)


def test_token_expiring_mid_push_is_refreshed(token_registry, cache):
    reg, tokens = token_registry
    img = make_image(cache, [{"opt/blob.bin": os.urandom(1 << 20)}])
    tokens.lifetime = 2  # the registry stops accepting each token after ~2 s; clients are told 300 s
    try:
        before = len(tokens.issued)
        result = push(
            img,
            f"{reg.host}/team/slow:1",
            cache=cache,
            credentials=CREDS,
            insecure=True,
            chunk_size=256 << 10,
            jobs=1,
            progress=SleepAfterFirstChunk(3.0),
        )
    finally:
        tokens.lifetime = 3600
    assert result.uploaded == 2
    assert len(tokens.issued) - before >= 2  # the first token expired mid-upload and a new one was fetched
    # control: the same kind of push with a long-lived token needs exactly one
    other = make_image(cache, [{"opt/blob.bin": os.urandom(1 << 20)}])
    before = len(tokens.issued)
    push(other, f"{reg.host}/team/fast:1", cache=cache, credentials=CREDS, insecure=True, chunk_size=256 << 10, jobs=1)
    assert len(tokens.issued) - before == 1


def test_mount_asks_for_pull_on_the_source_repository(token_registry, cache):
    reg, tokens = token_registry
    img = make_image(cache, [{"opt/shared.bin": os.urandom(50_000)}])
    push(img, f"{reg.host}/team/source:1", cache=cache, credentials=CREDS, insecure=True)
    before = len(tokens.requests)
    moved = push(img, f"{reg.host}/team/target:1", cache=cache, credentials=CREDS, insecure=True)
    assert moved.mounted == 2 and moved.bytes_sent == 0
    scopes = {s for r in tokens.requests[before:] for s in r["scopes"]}
    assert "repository:team/source:pull" in scopes and "repository:team/target:pull,push" in scopes


def test_no_token_or_password_in_logs_or_output(token_registry, cache, tmp_path, caplog, capsys):
    reg, tokens = token_registry
    caplog.set_level(logging.DEBUG)
    img = make_image(cache, [{"opt/log.bin": os.urandom(40_000)}])
    first = len(tokens.issued)
    push(img, f"{reg.host}/team/logs:1", cache=cache, credentials=CREDS, insecure=True, chunk_size=16 << 10)
    pull_image(f"{reg.host}/team/logs:1", "linux/amd64", Cache(tmp_path / "c"), credentials=CREDS, insecure=True)
    with pytest.raises(RegistryError) as info:
        push(
            img,
            f"{reg.host}/team/logs:2",
            cache=cache,
            credentials=Credentials(USER, "wrong-" + PASSWORD),
            insecure=True,
        )
    issued = tokens.issued[first:]
    assert issued, "the flow issued no token, so this test would prove nothing"
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err + info.value.line() + repr(CREDS)
    assert caplog.records, "nothing was logged at DEBUG, so this test would prove nothing"
    for token in issued:
        assert token not in text and token.split(".")[2] not in text
    assert PASSWORD not in text
    assert "_state=" not in caplog.text  # signed upload URLs are logged without their query string


def test_identity_token_is_exchanged_for_access_tokens(token_registry, cache):
    reg, tokens = token_registry
    refresh = secret("refresh")
    tokens.refresh_tokens[refresh] = USER
    img = make_image(cache, [{"etc/identity": b"oauth2\n"}])
    before = len(tokens.requests)
    result = push(
        img, f"{reg.host}/team/identity:1", cache=cache, credentials=Credentials(identity_token=refresh), insecure=True
    )
    assert result.uploaded == 2
    assert all(r.get("grant") == "refresh_token" and r["user"] == USER for r in tokens.requests[before:])
    with pytest.raises(RegistryError, match="refused"):
        push(
            img,
            f"{reg.host}/team/identity:2",
            cache=cache,
            credentials=Credentials(identity_token="revoked"),
            insecure=True,
        )
