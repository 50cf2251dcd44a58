"""WWW-Authenticate parsing and the bearer token cache (kurma.registry._auth)."""

from __future__ import annotations

from kurma.registry._auth import TokenCache, parse_challenge


def test_bearer_challenge() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.get("realm") == "https://auth.docker.io/token"
    assert challenge.get("service") == "registry.docker.io"
    assert challenge.get("scope") == "repository:library/ubuntu:pull"


def test_basic_challenge_and_preference() -> None:
    basic = parse_challenge('Basic realm="kurma-test"')
    assert basic is not None and basic.scheme == "basic" and basic.get("realm") == "kurma-test"
    both = parse_challenge('Basic realm="x", Bearer realm="https://t/token",service=s')
    assert both is not None and both.scheme == "bearer" and both.get("service") == "s"
    assert parse_challenge("Negotiate abc") is None
    assert parse_challenge(None) is None


def test_token_cache_expires() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    key = ("realm", "service", "repository:a:pull", "")
    cache.put(key, "t1", 60)
    assert cache.get(key) == "t1"
    now[0] += 53  # refreshed a little before it runs out
    assert cache.get(key) == "t1"
    now[0] += 2
    assert cache.get(key) is None
    cache.put(key, "t2", 60)
    cache.drop(key, "other")  # another thread's token is not dropped
    assert cache.get(key) == "t2"
    cache.drop(key, "t2")
    assert cache.get(key) is None
