"""kurmad's configuration: defaults <- YAML file <- flags, and errors that name the key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kurma.api import _tcp
from kurma.api._config import (
    KEYS,
    ConfigError,
    DaemonConfig,
    apply,
    check,
    load_config,
    load_file,
)
from kurma.api.daemon import main


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "kurmad.yml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_documented_ones() -> None:
    """Socket, state dir, cgroup parent and pod policy match DESIGN.md and the issue."""
    config = DaemonConfig()
    assert config.socket == "/run/kurma/kurmad.sock"
    assert config.state_dir == "/var/lib/kurma"
    assert config.stop_pods_on_exit is False
    assert config.cgroup_parent == "kurma"
    assert config.listen is None


def test_every_key_has_a_flag_and_help() -> None:
    """The file and the command line share one table: each key has a --flag."""
    assert {k.flag for k in KEYS} >= {"--socket", "--state-dir", "--stop-pods-on-exit"}
    assert all(k.help for k in KEYS)


def test_file_values_are_applied(tmp_path: Path) -> None:
    """Values in the YAML file replace the defaults, parsed to their types."""
    path = write(
        tmp_path,
        "socket: /tmp/k.sock\nstate_dir: /srv/kurma/\nstop_pods_on_exit: true\n"
        "stop_grace: 3\nlog_level: DEBUG\ncgroup_parent: kurma/pods\nworkers: 8\n",
    )
    config = load_config(["--config", path])
    assert config.socket == "/tmp/k.sock"
    assert config.state_dir == "/srv/kurma"
    assert config.stop_pods_on_exit is True
    assert config.stop_grace == 3.0
    assert config.log_level == "debug"
    assert config.cgroup_parent == "kurma/pods"
    assert config.workers == 8


def test_flags_override_the_file(tmp_path: Path) -> None:
    """A flag wins over the file; keys the flags leave out keep the file's value."""
    path = write(tmp_path, "stop_pods_on_exit: true\nstop_grace: 3\n")
    config = load_config(["--config", path, "--no-stop-pods-on-exit", "--socket", "/tmp/x.sock"])
    assert config.stop_pods_on_exit is False
    assert config.socket == "/tmp/x.sock"
    assert config.stop_grace == 3.0


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    """A misspelt key is refused, with the file, the key and the known keys."""
    path = write(tmp_path, "stop_pods_on_exti: true\n")
    with pytest.raises(ConfigError, match=r"kurmad.yml: unknown key 'stop_pods_on_exti'.*known"):
        load_config(["--config", path])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("stop_grace: soon\n", r"stop_grace: must be a number"),
        ("stop_grace: -1\n", r"stop_grace: must be a number of seconds in 0..86400"),
        ("stop_pods_on_exit: maybe\n", r"stop_pods_on_exit: must be true or false"),
        ("socket: run/k.sock\n", r"socket: must be an absolute path"),
        ("log_level: loud\n", r"log_level: must be one of debug, info"),
        ("cgroup_parent: ../escape\n", r"cgroup_parent: must be a relative cgroup path"),
        ("workers: 4.5\n", r"workers: must be an integer"),
        ("workers: 2\n", r"workers: must be an integer in 4..1024"),
        ("log_max_bytes: 100\n", r"log_max_bytes: must be an integer in 4096"),
        ("listen: localhost:7443\n", r"listen: must be an IP address and port"),
        ("listen: '::1:7443'\n", r"listen: put an IPv6 address in brackets"),
        ("listen: 127.0.0.1\n", r"listen: must be HOST:PORT"),
    ],
)
def test_bad_values_are_errors_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    """Each bad value is refused with the key and what was expected."""
    with pytest.raises(ConfigError, match=match):
        load_config(["--config", write(tmp_path, text)])


def test_bad_flag_value_names_the_flag() -> None:
    """A bad value on the command line is reported with the flag's spelling."""
    with pytest.raises(ConfigError, match=r"command line: --stop-grace: must be a number"):
        load_config(["--config", "/dev/null", "--stop-grace", "soon"])


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    """--config names a file that must exist; the default file may be absent."""
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(["--config", str(tmp_path / "absent.yml")])
    assert load_file(str(tmp_path / "absent.yml"), required=False) == {}


def test_malformed_yaml_and_non_mappings_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(["--config", write(tmp_path, "socket: [\n")])
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(["--config", write(tmp_path, "- socket\n")])


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(["--config", write(tmp_path, "")]) == DaemonConfig()


def test_ipv6_listen_address_is_accepted() -> None:
    config = apply(DaemonConfig(), {"listen": "[::1]:7443"}, "test")
    assert config.listen == "[::1]:7443"


def test_listen_needs_every_tls_file(tmp_path: Path) -> None:
    """The TCP listener is mutual TLS only: cert, key and CA are all required and exist."""
    config = apply(DaemonConfig(), {"listen": "127.0.0.1:7443"}, "test")
    with pytest.raises(ConfigError, match="tls_cert: required with listen"):
        check(config)
    files = {}
    for name in ("tls_cert", "tls_key", "tls_ca"):
        (tmp_path / name).write_text("pem")
        files[name] = str(tmp_path / name)
    assert check(apply(config, files, "test")).tls_ca == files["tls_ca"]
    with pytest.raises(ConfigError, match="tls_key: no such file"):
        check(apply(config, {**files, "tls_key": str(tmp_path / "absent")}, "test"))


def test_tls_files_without_listen_are_an_error() -> None:
    config = apply(DaemonConfig(), {"tls_cert": "/etc/kurma/server.pem"}, "test")
    with pytest.raises(ConfigError, match="tls_cert: only used with listen"):
        check(config)


def test_tls_files_must_be_pem(tmp_path: Path) -> None:
    """A TLS file that is not PEM is named before anything starts."""
    files = {}
    for name in ("tls_cert", "tls_key", "tls_ca"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
        files[name] = str(tmp_path / name)
    (tmp_path / "tls_key").write_text("not pem")
    config = DaemonConfig(listen="127.0.0.1:7443", **files)
    with pytest.raises(ValueError, match=r"tls_key: .* is not a PEM file"):
        _tcp.check_tcp_support(config)
    _tcp.check_tcp_support(DaemonConfig())  # no listener: nothing to check


def test_main_exits_2_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """kurmad refuses to start on a bad configuration, saying why on stderr."""
    assert main(["--config", write(tmp_path, "stop_grace: soon\n")]) == 2
    assert "stop_grace: must be a number" in capsys.readouterr().err


def test_daemon_module_does_not_import_grpc() -> None:
    """kurmad forks its launcher before gRPC is loaded: the entry module must not load it."""
    import subprocess

    code = "import sys, kurma.api.daemon, kurma.runtime._runtime; sys.exit('grpc' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
