"""kurmactl against a fake kurmad (an in-process gRPC server on a unix socket): what the
`ps` path imports, exec's streams and exit code, import progress, errors, and the lazy
command registry. The real daemon is in tests/root/test_kurmactl.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from kurma.api.v1 import images_pb2_grpc, pods_pb2_grpc
from kurma.cli.main import COMMAND_MODULES, build_parser
from kurma.client import images_pb2, pods_pb2

REPO = Path(__file__).resolve().parents[2]


class FakePods(pods_pb2_grpc.PodsServicer):
    """One running pod named web; Exec echoes stdin upper-cased and exits 5."""

    POD = pods_pb2.Pod(
        uuid="0123abcd-0000-0000-0000-000000000000",
        name="web",
        state=pods_pb2.POD_STATE_RUNNING,
        apps=[pods_pb2.App(name="web", state=pods_pb2.APP_STATE_RUNNING)],
    )

    def List(self, request, context):  # type: ignore[no-untyped-def]
        return pods_pb2.ListPodsResponse(pods=[self.POD])

    def Get(self, request, context):  # type: ignore[no-untyped-def]
        if request.pod not in ("web", self.POD.uuid[:8]):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no pod has the UUID or name {request.pod!r}")
        return self.POD

    def Exec(self, request_iterator, context):  # type: ignore[no-untyped-def]
        start = next(request_iterator).start
        yield pods_pb2.ExecResponse(stderr=f"{start.pod} {' '.join(start.argv)}\n".encode())
        for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "stdin":
                yield pods_pb2.ExecResponse(stdout=request.stdin.upper())
            elif kind == "close_stdin":
                break
        yield pods_pb2.ExecResponse(exit_code=5)


class FakeImages(images_pb2_grpc.ImagesServicer):
    def Import(self, request_iterator, context):  # type: ignore[no-untyped-def]
        done = total = 0
        for request in request_iterator:
            total = total or request.total_size
            done += len(request.data)
            yield images_pb2.ImportProgress(bytes_done=done, bytes_total=total)
        image = images_pb2.Image(id="sha512-fake", name="example.com/fake")
        yield images_pb2.ImportProgress(
            bytes_done=done, bytes_total=total, image=image, created=True
        )


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The socket path of a fake kurmad serving Pods and Images."""
    path = tmp_path_factory.mktemp("fake") / "k.sock"
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pods_pb2_grpc.add_PodsServicer_to_server(FakePods(), server)
    images_pb2_grpc.add_ImagesServicer_to_server(FakeImages(), server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield str(path)
    finally:
        server.stop(None)


def kurmactl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kurma.cli.main", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=60,
        cwd=REPO,
    )


# --- what `kurmactl ps` costs -----------------------------------------------------------------

HEAVY = (
    "kurma.runtime", "kurma.store", "kurma.aci", "kurma.init", "kurma.api._", "kurma.api.daemon",
    "cryptography", "yaml", "psutil", "zstandard", "seccomp", "pyseccomp", "grpc_health.",
    "grpc_reflection.", "kurma.cli._image", "kurma.cli._pki", "kurma.cli._completion",
    "kurma.cli._runspec", "kurma.cli._host",
)  # fmt: skip

MODULES_AFTER = """
import json, sys
from kurma.cli.main import run
try:
    code = run(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def modules_of(*argv: str) -> tuple[int, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER, *argv], capture_output=True, text=True, cwd=REPO
    )
    doc = json.loads(result.stdout.splitlines()[-1])
    return doc["code"], set(doc["modules"])


def test_ps_imports_grpc_and_the_generated_modules_only(fake: str) -> None:
    """The whole `kurmactl ps` path: grpc, protobuf, kurma.client and its generated
    modules, and of the CLI only what ps needs; nothing of the daemon, the runtime, the
    store, cryptography or yaml."""
    code, modules = modules_of("-H", fake, "ps")
    assert code == 0
    assert {"grpc", "kurma.client", "kurma.api.v1.pods_pb2", "kurma.cli._pods"} <= modules
    heavy = sorted(m for m in modules if m.startswith(HEAVY))
    assert heavy == []


def test_ps_help_imports_no_grpc() -> None:
    code, modules = modules_of("ps", "--help")
    assert code == 0
    assert "grpc" not in modules and "kurma.client" not in modules
    assert not any(m.startswith(HEAVY) for m in modules)


def test_each_command_is_registered_by_its_module() -> None:
    """COMMAND_MODULES matches the modules: the full tree has exactly its commands, and
    building the tree for one command alone still knows that command."""
    full = build_parser()
    (subparsers,) = [a for a in full._actions if a.dest == "command"]
    assert set(subparsers.choices) == set(COMMAND_MODULES)
    for command in COMMAND_MODULES:
        with pytest.raises(SystemExit) as e:
            build_parser(command).parse_args([command, "--help"])
        assert e.value.code == 0, command


# --- exec, import, errors ----------------------------------------------------------------------


def test_exec_streams_stdin_out_err_and_the_exit_code(fake: str) -> None:
    result = kurmactl("-H", fake, "exec", "-i", "web", "--", "cat", "-n", input="hello\n")
    assert (result.returncode, result.stdout, result.stderr) == (5, "HELLO\n", "web cat -n\n")


def test_exec_without_stdin_closes_it(fake: str) -> None:
    result = kurmactl("-H", fake, "exec", "--app", "web", "web", "true", input="ignored")
    assert (result.returncode, result.stdout) == (5, "")


def test_import_progress_bar_and_result(fake: str, tmp_path: Path) -> None:
    aci = tmp_path / "fake.aci"
    aci.write_bytes(b"x" * (600 << 10))  # three chunks of the client's 256 KiB
    argv = ["-H", fake, "image", "import", "--progress", "bar", str(aci)]
    result = subprocess.run(  # bytes: text mode would turn each \r into a newline
        [sys.executable, "-m", "kurma.cli.main", *argv], capture_output=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"sha512-fake  example.com/fake\n"
    assert result.stderr.count(b"\r") >= 3 and result.stderr.count(b"\n") == 1
    assert b"100%  600.0 KiB / 600.0 KiB" in result.stderr.split(b"\r")[-1]
    quiet = kurmactl("-H", fake, "image", "import", "--progress", "none", str(aci))
    assert quiet.stderr == ""


def test_missing_file_is_one_line(fake: str, tmp_path: Path) -> None:
    result = kurmactl("-H", fake, "image", "import", str(tmp_path / "none.aci"))
    assert result.returncode == 1
    assert result.stderr == f"kurmactl: {tmp_path / 'none.aci'}: No such file or directory\n"


def test_daemon_errors_are_one_line_exit_1(fake: str) -> None:
    result = kurmactl("-H", fake, "inspect", "nope")
    assert (result.returncode, result.stderr) == (
        1,
        "kurmactl: no pod has the UUID or name 'nope'\n",
    )


def test_unimplemented_method_is_passed_on(fake: str) -> None:
    """The fake has no Stats: grpc's own UNIMPLEMENTED message, exit 1."""
    result = kurmactl("-H", fake, "stats", "web")
    assert result.returncode == 1
    assert result.stderr.startswith("kurmactl: ") and result.stderr.count("\n") == 1


def test_tcp_needs_the_certificates() -> None:
    result = kurmactl("--host", "tcp://127.0.0.1:1", "ps")
    assert result.returncode == 2
    assert "give --cert, --key and --ca" in result.stderr


@pytest.mark.parametrize("host", ["tcp://nohost", "http://x:1", "unix:", "relative.sock"])
def test_bad_host_is_usage(host: str) -> None:
    result = kurmactl("--host", host, "ps")
    assert result.returncode == 2
    assert "give unix:///PATH or tcp://HOST:PORT" in result.stderr
