"""`kurmactl completion bash|zsh`: tables made from the argparse tree, and a bash script
that completes commands, flags, flag values and pod names (run through a real bash)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kurma.cli._completion import bash_script, collect, zsh_script
from kurma.cli.main import COMMAND_MODULES, build_parser


@pytest.fixture(scope="module")
def tables():  # type: ignore[no-untyped-def]
    return collect(build_parser())


def test_tables_have_every_command_and_flag(tables) -> None:  # type: ignore[no-untyped-def]
    assert set(tables.subs["kurmactl"]) == set(COMMAND_MODULES)
    assert {"import", "ls", "list", "inspect", "rm", "export", "build"} <= set(
        tables.subs["kurmactl image"]
    )
    assert {
        "--rm",
        "-d",
        "--volume",
        "--env",
        "--isolator",
        "--net",
        "--manifest",
        "--host",
    } <= set(tables.opts["kurmactl run"])
    assert "--host" in tables.valued["kurmactl ps"] and "-a" not in tables.valued["kurmactl ps"]
    assert tables.choices["kurmactl ps -o"] == ["table", "wide", "json", "name"]
    assert tables.kind["kurmactl logs"] == "pod"
    assert tables.kind["kurmactl rm"] == "pod"
    assert tables.kind["kurmactl image import"] == "file"
    assert "kurmactl ps" not in tables.kind


def test_scripts_are_stable_and_name_their_shell(tables) -> None:  # type: ignore[no-untyped-def]
    bash = bash_script(tables)
    assert bash == bash_script(collect(build_parser()))
    assert "complete -F _kurmactl kurmactl" in bash
    zsh = zsh_script(tables)
    assert zsh.startswith("#compdef kurmactl\n")
    assert "compdef _kurmactl kurmactl" in zsh and "typeset -gA _kurmactl_subs" in zsh
    assert "local path" not in zsh  # $path is $PATH in zsh


def test_completion_command_prints_the_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kurma.cli.main", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == bash_script(collect(build_parser()))


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_offers_what_bash_offers(tables, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The zsh function, with compadd and _files as stubs that print what they are given."""
    script = tmp_path / "_kurmactl"
    script.write_text(zsh_script(tables))
    subprocess.run(["zsh", "-n", str(script)], check=True)
    stub = _stub_kurmactl(tmp_path)

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        program = (
            "compdef() { :; }\n"
            'compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }\n'
            "_files() { print -- FILES; }\n"
            f"source {script}\n"
            f"words=({' '.join(repr(w) for w in words)})\n"
            f"CURRENT={len(words)}\n"
            "_kurmactl\n"
        )
        env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"}
        out = subprocess.run(
            ["zsh", "-f", "-c", program], capture_output=True, text=True, env=env, check=True
        ).stdout
        return sorted(w for w in out.splitlines() if w)

    assert "start" in complete("kurmactl ")
    assert complete("kurmactl image ")[:3] == ["build", "export", "import"]
    assert complete("kurmactl ps -o ") == ["json", "name", "table", "wide"]
    assert "--all" in complete("kurmactl ps -")
    assert complete("kurmactl logs ") == ["db-1", "web"]
    assert complete("kurmactl image import ") == ["FILES"]
    assert complete("kurmactl run --manifest ") == ["FILES"]


def _stub_kurmactl(tmp_path: Path) -> Path:
    """A `kurmactl` on PATH whose `ps` lists two pods."""
    stub = tmp_path / "bin" / "kurmactl"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\necho web\necho db-1\n")
    stub.chmod(0o755)
    return stub


# --- bash, for real --------------------------------------------------------------------------


@pytest.fixture
def complete(tables, tmp_path: Path):  # type: ignore[no-untyped-def]
    """complete("kurmactl logs ") -> what bash offers; `kurmactl ps` is a stub that lists
    two pods, so that pod names can be completed without a daemon."""
    script = tmp_path / "kurmactl.bash"
    script.write_text(bash_script(tables))
    stub = _stub_kurmactl(tmp_path)
    (tmp_path / "pod.json").write_text("{}")

    def run(line: str) -> list[str]:
        words = line.split(" ")
        program = (
            f"source {script}\n"
            f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\n"
            "_kurmactl\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"}
        out = subprocess.run(
            ["bash", "-c", program],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=True,
        ).stdout
        return sorted(w for w in out.splitlines() if w)

    return run


def test_bash_completes_commands(complete) -> None:  # type: ignore[no-untyped-def]
    assert complete("kurmactl st") == ["start", "stats", "stop"]
    assert complete("kurmactl image i") == ["import", "inspect"]
    assert complete("kurmactl --host /s image l") == ["list", "ls"]


def test_bash_completes_flags_and_their_values(complete) -> None:  # type: ignore[no-untyped-def]
    assert complete("kurmactl ps --a") == ["--all"]
    assert complete("kurmactl ps -o ") == ["json", "name", "table", "wide"]
    assert complete("kurmactl run --pub") == ["--publish"]
    assert complete("kurmactl run --manifest po") == ["pod.json"]


def test_bash_completes_pod_names_and_files(complete) -> None:  # type: ignore[no-untyped-def]
    assert complete("kurmactl logs ") == ["db-1", "web"]
    assert complete("kurmactl rm -f w") == ["web"]
    assert complete("kurmactl image import p") == ["pod.json"]
    assert complete("kurmactl run img -- ") == []  # a command for the pod: nothing to offer
