"""A helper for root tests: run a function in a forked child and get its result back.

Kernel state changes (namespaces, capabilities, seccomp, cgroup membership) must never reach
the pytest process, so tests make them in children. The helper's own contract is tested here.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

pytestmark = pytest.mark.root


@contextmanager
def forked(fn: Callable[[], Any]) -> Iterator[tuple[int, Callable[[float], Any]]]:
    """Run `fn` in a child; yields (pid, result(timeout)). The child is killed on the way out.

    The child sends `fn`'s JSON-encoded return value (or its traceback) through a pipe and
    leaves with os._exit, so no pytest machinery runs twice.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            payload = json.dumps({"ok": fn()})
        except BaseException:
            payload = json.dumps({"error": traceback.format_exc()})
        os.write(w, payload.encode())
        os._exit(0)
    os.close(w)

    def result(timeout: float = 20.0) -> Any:
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise TimeoutError("child did not answer")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        answer = json.loads(data)
        assert "error" not in answer, answer["error"]
        return answer["ok"]

    try:
        yield pid, result
    finally:
        os.close(r)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def run_forked(fn: Callable[[], Any]) -> Any:
    """Run `fn` in a child and return what it returned."""
    with forked(fn) as (_, result):
        return result()



def test_forked_returns_the_childs_result() -> None:
    """The child's return value arrives JSON-decoded; the child ran in another process."""
    assert run_forked(lambda: os.getpid()) != os.getpid()


def test_forked_reports_the_childs_exception() -> None:
    """A child's exception fails the test with the child's traceback."""

    def child() -> None:
        raise RuntimeError("boom in child")

    with pytest.raises(AssertionError, match="boom in child"):
        run_forked(child)


def test_forked_kills_a_child_that_hangs() -> None:
    """A child still running when the block ends is killed and reaped."""
    with forked(lambda: time.sleep(60)) as (pid, result), pytest.raises(TimeoutError):
        result(0.2)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
