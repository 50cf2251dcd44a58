"""kurma-podinit's log copying (`-f FD:NAME`, `-l MAXBYTES:KEEP`), driven as the real binary.

Pods start as in test_podinit.py; the apps' stdout and stderr are the write ends of pipes whose
read ends podinit gets with `-f`. Apps are forked before podinit's exec by LAUNCH, which makes
their pipes (a write end passed down would stay open in unshare's parent: no EOF), or run in the
pod with `nsenter` writing to a pipe of the test. Every pipe end the test opens is closed on the
way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from kurma.runtime import _podinit
from kurma.runtime._podinit import (
    LOGS_DIR,
    build_podinit,
    log_path,
    podinit_argv,
    read_exit_records,
)
from tests.root.test_podinit import DEADLINE, launch, running_pod

from ..waiting import wait_for


class Pipes:
    """os.pipe()s whose ends are all closed at teardown unless closed before."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def new(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.open |= {r, w}
        return r, w

    def close(self, *fds: int) -> None:
        for fd in fds:
            self.open.discard(fd)
            os.close(fd)


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_podinit()


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    for fd in p.open:
        with suppress(OSError):
            os.close(fd)


def kept_logs(pod_dir: Path, name: str) -> list[Path]:
    """NAME.log.K ... NAME.log.1, NAME.log that exist: oldest first."""
    logs = pod_dir / LOGS_DIR
    rotated = sorted(logs.glob(f"{name}.log.*"), key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    return [*rotated, logs / f"{name}.log"]


def run_in_pod(pod_pid: int, script: str, out: int) -> None:
    """Run `sh -c script` in the pod with stdout and stderr on `out`; waits for it."""
    subprocess.run(
        ["nsenter", f"--target={pod_pid}", "--pid", "--mount", "--", "sh", "-c", script],
        stdout=out,
        stderr=out,
        timeout=DEADLINE,
        check=True,
    )


# ---- pure helpers (no root needed) ----


def test_podinit_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """podinit_argv() builds the options podinit parses; bad values are ValueErrors."""
    exe = "/opt/kurma-podinit"
    monkeypatch.setattr(_podinit, "podinit_path", lambda: Path(exe))
    assert podinit_argv(tmp_path) == [exe, str(tmp_path)]
    assert podinit_argv(
        tmp_path, grace=2.5, logs=[(7, "web"), (8, "web"), (9, "db-1")], rotate=(4096, 0)
    ) == [exe, "-g", "2.5", "-f", "7:web", "-f", "8:web", "-f", "9:db-1", "-l", "4096:0",
          str(tmp_path)]  # fmt: skip
    for bad in (
        {"grace": -1},
        {"logs": [(3, "web")]},
        {"logs": [(7, "Web")]},
        {"logs": [(7, "")]},
        {"logs": [(7, "a"), (7, "b")]},
        {"logs": [(i + 4, "a") for i in range(65)]},
        {"rotate": (4095, 3)},
        {"rotate": (4096, 100)},
    ):
        with pytest.raises(ValueError):
            podinit_argv(tmp_path, **bad)  # type: ignore[arg-type]


def test_log_path(tmp_path: Path) -> None:
    assert log_path(tmp_path, "web") == tmp_path / "logs" / "web.log"


# ---- the real binary ----


@pytest.mark.root
def test_app_output_lands_in_log(binary: Path, tmp_path: Path, pipes: Pipes) -> None:
    """stdout and stderr of an app forked before the exec and of one run later reach
    logs/NAME.log; an existing file is appended to; streams sharing a NAME share the file."""
    (tmp_path / "pod" / "logs").mkdir(parents=True)
    (tmp_path / "pod" / "logs" / "web.log").write_text("old\n")
    hook_r, hook_w = pipes.new()
    db_r, db_w = pipes.new()
    apps = [{"name": "web", "argv": ["sh", "-c", "echo out; echo err >&2"], "log_fd": 20}]
    args = ("-f", "20:web", "-f", f"{hook_r}:web", "-f", f"{db_r}:db")
    with running_pod(
        binary, tmp_path, *args, existing=True, launcher=launch(apps), pass_fds=(hook_r, db_r)
    ) as pod:
        pipes.close(hook_r, db_r)
        web, db = log_path(pod.dir, "web"), log_path(pod.dir, "db")
        assert pod.wait_record(2) == 0
        wait_for(lambda: web.read_text() == "old\nout\nerr\n", "web's output", DEADLINE)
        run_in_pod(pod.pid, "echo hook", hook_w)
        run_in_pod(pod.pid, "echo db; echo oops >&2", db_w)
        wait_for(lambda: web.read_text() == "old\nout\nerr\nhook\n", "the hook's output", DEADLINE)
        wait_for(lambda: db.read_text() == "db\noops\n", "db's output", DEADLINE)
        assert db.stat().st_mode & 0o777 == 0o640
        assert not Path(f"/proc/{pod.pid}/fd/20").exists()  # EOF: web and its sh have exited
        # The other streams are kept open, non-blocking and close-on-exec.
        flags = {
            fd: int(Path(f"/proc/{pod.pid}/fdinfo/{fd}").read_text().split()[3], 8)
            for fd in (hook_r, db_r)
        }
        for fd, flag in flags.items():
            assert flag & os.O_NONBLOCK and flag & 0o2000000, (fd, oct(flag))
        assert pod.alive()


@pytest.mark.root
@pytest.mark.parametrize("keep", [0, 3])
def test_rotation(binary: Path, tmp_path: Path, pipes: Pipes, keep: int) -> None:
    """With -l 4096:KEEP, NAME.log.1..KEEP appear, none exceeds 4096 bytes, and the kept files
    in order are a suffix of what the app wrote: nothing lost within the window."""
    r, w = pipes.new()
    lines = 2000  # 24 KB: several times the kept window
    script = f"i=0; while [ $i -lt {lines} ]; do printf 'line %06d\\n' $i; i=$((i+1)); done"
    written = b"".join(b"line %06d\n" % i for i in range(lines))
    with running_pod(
        binary, tmp_path, "-f", f"{r}:app", "-l", f"4096:{keep}", pass_fds=(r,)
    ) as pod:
        pipes.close(r)
        run_in_pod(pod.pid, script, w)
        pipes.close(w)
        current = log_path(pod.dir, "app")
        wait_for(lambda: current.read_bytes().endswith(written[-12:]), "the last line", DEADLINE)
        files = kept_logs(pod.dir, "app")
        assert [f.name for f in files] == [
            *(f"app.log.{k}" for k in range(keep, 0, -1)),
            "app.log",
        ]
        assert all(0 < f.stat().st_size <= 4096 for f in files), [
            (f.name, f.stat().st_size) for f in files
        ]
        kept = b"".join(f.read_bytes() for f in files)
        assert written.endswith(kept)
        # A file is rotated when the next read does not fit: two neighbours hold > 4096 bytes.
        assert len(kept) > 4096 * ((keep + 1) // 2)


@pytest.mark.root
def test_flood_never_blocks_on_unwritable_log(
    binary: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An app writing 10 MB fast is never held up when the log cannot be written (NAME.log is
    a directory): podinit warns once, drops the data and keeps draining."""
    (tmp_path / "pod" / "logs" / "app.log").mkdir(parents=True)
    flood = f"import os; os.write(1, b'x' * {10 << 20})"  # one write(2): the pipe takes 64 KiB
    apps = [{"name": "app", "argv": [sys.executable, "-c", flood], "log_fd": 20}]
    start = time.monotonic()
    with running_pod(binary, tmp_path, "-f", "20:app", existing=True, launcher=launch(apps)) as pod:
        assert pod.wait_record(2) == 0
        assert time.monotonic() - start < 5.0
        wait_for(lambda: not Path(f"/proc/{pod.pid}/fd/20").exists(), "the stream's EOF", DEADLINE)
        assert pod.alive()
        assert list((pod.dir / "logs" / "app.log").iterdir()) == []
    err = capfd.readouterr().err
    assert err.count("podinit: cannot write log app: Is a directory\n") == 1, err


# Prints "up"; on SIGTERM writes 60000 bytes at once (they fit in the pipe) and exits.
FAREWELL = b"".join(b"bye %05d\n" % i for i in range(6000))
STOPPING_APP = r"""
import os, signal
def stop(sig, frame):
    os.write(1, b"".join(b"bye %05d\n" % i for i in range(6000)))
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
os.write(1, b"up\n")
signal.pause()
"""


@pytest.mark.root
def test_logs_drained_when_pod_stops(binary: Path, tmp_path: Path) -> None:
    """What the apps wrote while being stopped is in the logs once podinit has exited. With
    4 KiB reads the loop copies little of the 60 KB before the pod is empty: the rest is the
    final drain's."""
    apps = [{"name": "app", "argv": [sys.executable, "-c", STOPPING_APP], "log_fd": 20}]
    args = ("-f", "20:app", "-l", "4096:99")
    with running_pod(binary, tmp_path, *args, launcher=launch(apps)) as pod:
        log = log_path(pod.dir, "app")
        wait_for(lambda: log.read_bytes() == b"up\n", "the app to be up", DEADLINE)
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.unshare.wait(DEADLINE) == 0
        assert read_exit_records(pod.dir) == {2: 0}
        kept = b"".join(f.read_bytes() for f in kept_logs(pod.dir, "app"))
        assert kept == b"up\n" + FAREWELL


@pytest.mark.root
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "3:app"], "bad -f FD:NAME"),
        (["-f", "7:App"], "bad -f FD:NAME"),
        (["-f", "7:a/b"], "bad -f FD:NAME"),
        (["-f", "7:"], "bad -f FD:NAME"),
        (["-f", "x:app"], "bad -f FD:NAME"),
        (["-f", "99999999999:app"], "bad -f FD:NAME"),
        (["-f", "7:a", "-f", "7:b"], "-f: fd given twice"),
        ([a for i in range(65) for a in ("-f", f"{i + 4}:a")], "too many -f streams"),
        (["-l", "4095:3"], "bad -l MAXBYTES:KEEP"),
        (["-l", "4096:100"], "bad -l MAXBYTES:KEEP"),
        (["-l", "4096"], "bad -l MAXBYTES:KEEP"),
        (["-l", "4096:3x"], "bad -l MAXBYTES:KEEP"),
        (["-l", ":3"], "bad -l MAXBYTES:KEEP"),
        (["-x", "1"], "usage: kurma-podinit"),
    ],
)
def test_bad_log_arguments(binary: Path, tmp_path: Path, args: list[str], message: str) -> None:
    """Malformed -f/-l: exit 2 with a `podinit: ...` line naming the problem."""
    proc = subprocess.run(
        [str(binary), *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"podinit: {message}"), proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.root
def test_unopened_log_fd(binary: Path, tmp_path: Path) -> None:
    """An -f fd that is not open is a start-up error (exit 2)."""
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--", str(binary), "-f", "42:app", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == "podinit: -f: unusable fd 42: Bad file descriptor\n"
