"""An app's log for Pods.Logs: the last N lines, then (follow) whatever podinit appends.

podinit writes `logs/NAME.log` and rotates by renaming it to `NAME.log.1` (the older ones
shift to .2 ...) and starting a new file. A follower keeps the file it reads open, so a
rotation loses nothing: it reads the old file to its end, then any rotated files newer than
it, then the new current one. Polling (every `POLL` seconds) is enough for people and
probes, and needs no inotify descriptor per stream.

An app's stream ends once it has exited and its log is read: immediately when the whole
pod has exited (podinit drained every pipe before it went), else after `SETTLE` seconds
without new data, since podinit may still copy the last bytes from the app's pipe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

POLL = 0.1
SETTLE = 0.5
CHUNK = 64 * 1024


def rotated(path: Path, k: int) -> Path:
    return path.with_name(f"{path.name}.{k}")


def _rotated_files(path: Path) -> list[Path]:
    """The rotated files of `path`, newest (.1) first, as far as they go without a gap."""
    files = []
    k = 1
    while rotated(path, k).exists():
        files.append(rotated(path, k))
        k += 1
    return files


def last_lines(data: bytes, n: int) -> tuple[bytes, int]:
    """The last `n` lines of `data` (a final unterminated line counts) and how many it has."""
    if n <= 0 or not data:
        return b"", 0
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end
    found = 0
    while found < n:
        i = data.rfind(b"\n", 0, start)
        if i < 0:
            return data, found + 1
        found += 1
        start = i
    return data[start + 1 :], found


def _read_tail(f: BinaryIO, n: int, size: int) -> tuple[bytes, int]:
    """The last `n` lines of the first `size` bytes of `f`, reading backwards in blocks."""
    block = 64 * 1024
    data = b""
    pos = size
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        if data.count(b"\n") > n:
            break
    return last_lines(data, n)


class LogFollower:
    """One app's log file, read from where `tail` puts it, then followed across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._ino: int | None = None

    def _open_current(self) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115  (kept open across polls)
        except FileNotFoundError:
            return False
        self._file, self._ino = f, os.fstat(f.fileno()).st_ino
        return True

    def initial(self, tail: int) -> Iterator[bytes]:
        """What is kept already: everything (tail 0), nothing (tail < 0), or the last lines."""
        if not self._open_current():
            if tail == 0:  # rotated files may exist while the new current one does not yet
                for old in reversed(_rotated_files(self.path)):
                    yield from _read_all(old)
            return
        assert self._file is not None
        size = os.fstat(self._file.fileno()).st_size
        if tail < 0:
            self._file.seek(size)
            return
        if tail == 0:
            for old in reversed(_rotated_files(self.path)):
                yield from _read_all(old)
            self._file.seek(0)
            yield from _read_chunks(self._file, size)
            return
        data, found = _read_tail(self._file, tail, size)
        self._file.seek(size)
        for old in _rotated_files(self.path):  # newest first, while lines are missing
            if found >= tail:
                break
            more, got = _read_tail_file(old, tail - found)
            data, found = more + data, found + got
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]

    def poll(self) -> Iterator[bytes]:
        """New data since the last read, following a rotation if one happened."""
        if self._file is None:
            if not self._open_current():
                return
            assert self._file is not None
        yield from _read_chunks(self._file)
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return  # between podinit's rename and its new file
        if current == self._ino:
            return
        yield from _read_chunks(self._file)  # written before the rename
        newer = self._newer_rotated()
        self._file.close()
        self._file = None
        for old in newer:
            yield from _read_all(old)
        if self._open_current():
            assert self._file is not None
            yield from _read_chunks(self._file)

    def _newer_rotated(self) -> list[Path]:
        """Rotated files newer than the one we hold, oldest first (two rotations in a poll)."""
        files = _rotated_files(self.path)
        for k, old in enumerate(files):
            try:
                if os.stat(old).st_ino == self._ino:
                    return list(reversed(files[:k]))
            except FileNotFoundError:
                continue
        return []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_chunks(f: BinaryIO, limit: int | None = None) -> Iterator[bytes]:
    left = limit
    while left is None or left > 0:
        data = f.read(CHUNK if left is None else min(CHUNK, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data


def _read_all(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            yield from _read_chunks(f)
    except FileNotFoundError:
        return


def _read_tail_file(path: Path, n: int) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as f:
            return _read_tail(f, n, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        return b"", 0


# (pod has exited, names of the apps that have exited); raises when the pod is gone
StateProbe = Callable[[], tuple[bool, set[str]]]


def stream_logs(
    files: dict[str, Path],
    tail: int,
    follow: bool,
    state: StateProbe,
    active: Callable[[], bool],
    *,
    poll: float = POLL,
    settle: float = SETTLE,
) -> Iterator[tuple[str, bytes]]:
    """(app, data) for each app's log: the tail, then (follow) new data until every app has
    exited and its log is read, or `active()` turns false (the client went away)."""
    followers = {app: LogFollower(path) for app, path in files.items()}
    try:
        for app, follower in followers.items():
            for data in follower.initial(tail):
                yield app, data
        if not follow:
            return
        quiet_since: dict[str, float] = {}
        while active() and followers:
            got = False
            for app, follower in followers.items():
                for data in follower.poll():
                    got = True
                    quiet_since.pop(app, None)
                    yield app, data
            if got:
                continue
            pod_exited, exited = state()
            now = time.monotonic()
            for app in [a for a in followers if a in exited]:
                since = quiet_since.setdefault(app, now)
                if pod_exited or now - since >= settle:
                    followers.pop(app).close()
            if followers:
                time.sleep(poll)
    finally:
        for follower in followers.values():
            follower.close()
