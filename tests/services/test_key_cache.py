"""The in-process API key cache (AUTH_KEY_CACHE_SECONDS): what it saves and its bounds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import event, update

from app.extensions import db
from app.models import ApiKey, Role
from app.services import auth
from app.services.errors import NotAuthenticated
from app.services.principal import operator
from tests.api.support import T0

ADMIN = operator("admin@example.com")
TTL = 5


@pytest.fixture
def cache(app_ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The cache on, with a clock the test moves (returned: [monotonic seconds])."""
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    auth.key_cache.configure(TTL)
    yield clock
    auth.key_cache.configure(app_ctx.config["AUTH_KEY_CACHE_SECONDS"])


def make(**fields: object) -> tuple[ApiKey, str]:
    return auth.create_api_key(name="k", role=Role.CLIENT, client_id="c1", now=T0, **fields)  # type: ignore[arg-type]


def statements_during(action: object) -> int:
    count = [0]

    def seen(*_args: object) -> None:
        count[0] += 1

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        action()  # type: ignore[operator]
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    return count[0]


def revoke_elsewhere(key_id: str) -> None:
    """What another process's revocation looks like from here: the row changes, nothing
    in this process is told."""
    db.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=T0))
    db.session.commit()


def test_a_cached_key_is_served_without_reading_the_database(cache: list[float]) -> None:
    key, raw = make()
    assert auth.authenticate_key(raw, now=T0).key_id == key.id
    principal: list[object] = []
    assert statements_during(lambda: principal.append(auth.authenticate_key(raw, now=T0))) == 0
    assert principal[0] == auth.Principal(role=Role.CLIENT, name="k", key_id=key.id, client_id="c1")


def test_a_revocation_in_this_process_takes_effect_at_once(cache: list[float]) -> None:
    key, raw = make()
    auth.authenticate_key(raw, now=T0)
    auth.revoke_api_key(ADMIN, key.id, now=T0)
    with pytest.raises(NotAuthenticated, match="revoked"):
        auth.authenticate_key(raw, now=T0)


def test_a_revocation_elsewhere_takes_effect_within_the_ttl(cache: list[float]) -> None:
    key, raw = make()
    auth.authenticate_key(raw, now=T0)
    revoke_elsewhere(key.id)
    cache[0] += TTL - 0.1
    assert auth.authenticate_key(raw, now=T0).key_id == key.id  # still cached
    cache[0] += 0.1
    with pytest.raises(NotAuthenticated, match="revoked"):
        auth.authenticate_key(raw, now=T0)


def test_expiry_is_exact_on_a_cached_key(cache: list[float]) -> None:
    key, raw = make(expires_at=T0 + timedelta(seconds=30))
    auth.authenticate_key(raw, now=T0)
    assert auth.authenticate_key(raw, now=T0 + timedelta(seconds=29)).key_id == key.id
    with pytest.raises(NotAuthenticated, match="expired"):
        auth.authenticate_key(raw, now=T0 + timedelta(seconds=30))


def test_a_rotated_out_secret_dies_at_the_end_of_its_grace_even_when_cached(
    cache: list[float],
) -> None:
    key, old = make()
    auth.rotate_api_key(ADMIN, key.id, 60, now=T0)
    assert auth.authenticate_key(old, now=T0 + timedelta(seconds=10)).key_id == key.id
    with pytest.raises(NotAuthenticated, match="grace period has ended"):
        auth.authenticate_key(old, now=T0 + timedelta(seconds=60))


def test_a_rotation_drops_the_replaced_secret_from_the_cache(cache: list[float]) -> None:
    key, old = make()
    auth.authenticate_key(old, now=T0)
    auth.rotate_api_key(ADMIN, key.id, 0, now=T0)
    with pytest.raises(NotAuthenticated, match="invalid API key"):
        auth.authenticate_key(old, now=T0)


def test_last_use_keeps_its_resolution_while_cached(cache: list[float]) -> None:
    key, raw = make()
    auth.authenticate_key(raw, now=T0)
    later = T0 + auth.LAST_USED_RESOLUTION + timedelta(seconds=1)
    auth.authenticate_key(raw, now=later)
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).last_used_at == later


def test_wrong_secrets_are_never_cached(cache: list[float]) -> None:
    _, raw = make()
    for _ in range(2):
        with pytest.raises(NotAuthenticated, match="invalid API key"):
            auth.authenticate_key(raw + "x", now=T0)
    assert not auth.key_cache._entries


def test_a_ttl_of_zero_reads_the_key_every_time(cache: list[float]) -> None:
    auth.key_cache.configure(0)
    key, raw = make()
    auth.authenticate_key(raw, now=T0)
    revoke_elsewhere(key.id)
    with pytest.raises(NotAuthenticated, match="revoked"):
        auth.authenticate_key(raw, now=T0)


def test_a_read_that_began_before_a_revocation_is_not_cached(cache: list[float]) -> None:
    """A request thread reads the key, a revocation here clears the cache, then the thread
    stores what it read: that entry must not keep the revoked key alive for the TTL."""
    key, raw = make()
    digest = auth.hash_api_key(raw)
    generation = auth.key_cache.generation  # the reader starts, before its database read
    auth.revoke_api_key(ADMIN, key.id, now=T0)  # another thread revokes and clears
    stale = auth.CachedKey(
        principal=auth.Principal(role=Role.CLIENT, name="k", key_id=key.id, client_id="c1"),
        expires_at=None,
        last_used_at=T0,
        cached_at=cache[0],
    )
    auth.key_cache.put(digest, stale, generation)  # the reader stores what it found
    with pytest.raises(NotAuthenticated, match="revoked"):
        auth.authenticate_key(raw, now=T0)
