"""The forwarder's settings: targets, protocol, and the exit status 2 for bad ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kurma.logfwd import parse_target
from kurma.logfwd._main import Target


@pytest.mark.parametrize(
    "text, target",
    [
        ("logs.example.com", Target("logs.example.com", 514)),
        ("127.0.0.1:6514", Target("127.0.0.1", 6514)),
        ("[::1]:1514", Target("::1", 1514)),
        ("[fdfe::1]", Target("fdfe::1", 514)),
        ("fdfe::1", Target("fdfe::1", 514)),
        (" host:1 ", Target("host", 1)),
    ],
)
def test_targets(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("host:", "port after ':' is missing"),
        ("host:0", "not 1-65535"),
        ("host:65536", "not 1-65535"),
        ("host:ab", "not 1-65535"),
        ("[::1", r"\[IPV6\]:PORT"),
        ("[::1]x", r"\[IPV6\]:PORT"),
        (":514", "not a host"),
        ("tcp://host:514", "not a host"),
    ],
)
def test_bad_targets_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_target(text)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kurma.logfwd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(
    "args, env, problem",
    [
        ((), {}, "no syslog target"),
        (("--target", "host:99999"),  {}, "port '99999' is not 1-65535"),
        ((), {"SYSLOG_TARGET": "bad host"}, "'bad host' is not a host"),
        (("--target", "h"), {"SYSLOG_PROTOCOL": "sctp"}, "protocol 'sctp': give tcp or udp"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2(args: tuple[str, ...], env: dict[str, str], problem: str) -> None:
    """A bad target or protocol (flag or environment): exit 2 and a message naming it."""
    result = run(*args, env=env)
    assert result.returncode == 2
    assert problem in result.stderr
