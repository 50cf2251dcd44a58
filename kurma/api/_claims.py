"""What kurmad claims before it starts: its socket path and its state directory.

A second kurmad must not take over a socket that a live daemon answers on, nor run pods from
the same state directory (two runtimes would adopt the same pods). The socket is probed by
connecting to it; the state directory is held with an flock on `locks/kurmad.lock` for the
daemon's lifetime (its launcher inherits the descriptor and holds it until it exits too).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
import time
from pathlib import Path

UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


class ClaimError(RuntimeError):
    """Another daemon owns the socket or the state directory, or the path is unusable."""


def claim_socket_path(path: str) -> None:
    """Make the socket's directory (0755) and remove a stale socket; ClaimError if a live
    daemon answers on `path` or `path` is something else than a socket."""
    if len(os.fsencode(path)) > UNIX_PATH_MAX - 16:  # room for the temporary bind name
        raise ClaimError(f"socket path {path!r} is too long for a unix socket")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
        os.chmod(parent, 0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ClaimError(f"{path} exists and is not a socket; move it away or choose --socket")
    peer = _peer_pid(path)
    if peer is not None:
        raise ClaimError(f"another kurmad (pid {peer}) is serving on {path}; stop it first")
    os.unlink(path)


def _peer_pid(path: str) -> int | None:
    """The pid of whoever accepts connections on `path`, None when nobody does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return None
            raise ClaimError(f"cannot probe {path}: {e.strerror}") from e
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]


class StateLock:
    """An exclusive flock on `STATE_DIR/locks/kurmad.lock`, waited for up to `wait` seconds
    (a daemon killed a moment ago leaves its launcher holding it briefly)."""

    def __init__(self, state_dir: str, wait: float = 5.0) -> None:
        locks = Path(state_dir) / "locks"
        locks.mkdir(parents=True, mode=0o700, exist_ok=True)
        self.path = locks / "kurmad.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    raise ClaimError(
                        f"another kurmad uses the state directory {state_dir} "
                        f"(it holds {self.path}); stop it first"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
