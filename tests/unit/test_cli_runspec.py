"""The flags of `kurmactl run`/`create` as a RunSpec: command groups, volumes, env,
isolators, --net, and the combinations refused with exit 2."""

from __future__ import annotations

import argparse

import pytest

from kurma.cli._connect import UsageError
from kurma.cli._runspec import (
    PLACEHOLDER,
    VolumeFlag,
    extract_commands,
    pair_commands,
    parse_env,
    parse_isolator,
    parse_publish,
    parse_volume,
    pod_request,
)
from kurma.cli.main import parse

# --- commands after `--` -------------------------------------------------------------------


def test_one_image_with_its_command() -> None:
    argv, commands = extract_commands(["run", "--rm", "img", "--", "sh", "-c", "echo --"])
    assert argv == ["run", "--rm", "img", f"{PLACEHOLDER}0"]
    assert commands == [["sh", "-c", "echo --"]]


def test_groups_end_at_triple_dash() -> None:
    """Each image gets the command that follows it; flags inside a group stay in it."""
    argv = ["-H", "/s", "run", "a", "--", "x", "--rm", "---", "b", "c", "--", "y", "--", "z"]
    out, commands = extract_commands(argv)
    assert out == ["-H", "/s", "run", "a", f"{PLACEHOLDER}0", "b", "c", f"{PLACEHOLDER}1"]
    assert commands == [["x", "--rm"], ["y", "--", "z"]]
    assert pair_commands(out[3:], commands) == [
        ("a", ["x", "--rm"]),
        ("b", []),
        ("c", ["y", "--", "z"]),
    ]


def test_other_commands_keep_their_dashes() -> None:
    argv = ["rm", "--", "-odd-name"]
    assert extract_commands(argv) == (argv, [])


@pytest.mark.parametrize(
    "tokens",
    [
        [f"{PLACEHOLDER}0"],  # a command before any image
        ["a", f"{PLACEHOLDER}0", f"{PLACEHOLDER}1"],  # two commands for one image
    ],
)
def test_a_command_needs_its_image(tokens: list[str]) -> None:
    with pytest.raises(UsageError, match="follows its image"):
        pair_commands(tokens, [["x"], ["y"]])


def test_empty_command_is_refused() -> None:
    with pytest.raises(UsageError, match="must be followed by the command"):
        pair_commands(["a", f"{PLACEHOLDER}0"], [[]])


def test_parse_puts_commands_on_the_namespace() -> None:
    args = parse(["run", "-d", "--name", "n", "img", "--", "/bin/true"])
    assert args.images == ["img", f"{PLACEHOLDER}0"]
    assert args.commands == [["/bin/true"]]
    assert (args.detach, args.name) == (True, "n")


# --- volumes, env, isolators ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data:/data", VolumeFlag("data", "/data")),
        ("data:/data:ro", VolumeFlag("data", "/data", read_only=True)),
        ("/srv/www:/var/www", VolumeFlag("var-www", "/var/www", source="/srv/www")),
        ("/srv:/srv:rw", VolumeFlag("srv", "/srv", source="/srv")),
        ("/srv:/:ro", VolumeFlag("volume", "/", source="/srv", read_only=True)),
    ],
)
def test_volume_forms(text: str, expected: VolumeFlag) -> None:
    assert parse_volume(text) == expected


def test_host_volume_names_are_unique() -> None:
    taken: set[str] = set()
    first = parse_volume("/a:/data", taken)
    second = parse_volume("/b:/data", taken)
    assert (first.name, second.name) == ("data", "data-2")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("data", "NAME:/PATH"),
        (":/x", "NAME:/PATH"),
        ("a:/x:rx", "ro or rw"),
        ("a:/x:ro:extra", "NAME:/PATH"),
        ("a:relative", "must be absolute"),
        ("./dir:/x", "absolute path"),
        ("dir/sub:/x", "absolute path"),
    ],
)
def test_bad_volumes(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_volume(text)


def test_env_pairs_and_names_from_here() -> None:
    env = parse_env(["A=1", "B=x=y", "C=", "HOME", "A=2"], environ={"HOME": "/root"})
    assert env == {"A": "2", "B": "x=y", "C": "", "HOME": "/root"}


@pytest.mark.parametrize(("item", "says"), [("=v", "NAME=VALUE"), ("UNSET", "not set here")])
def test_bad_env(item: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_env([item], environ={})


def test_isolator_keeps_the_json_text() -> None:
    assert parse_isolator('resource/memory={"limit": "64M"}') == (
        "resource/memory",
        '{"limit": "64M"}',
    )
    assert parse_isolator("os/linux/no-new-privileges=true") == (
        "os/linux/no-new-privileges",
        "true",
    )


@pytest.mark.parametrize(
    ("text", "says"), [("x", "NAME=JSON"), ("x=", "NAME=JSON"), ("x={", "not JSON")]
)
def test_bad_isolator(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_isolator(text)


def test_publish_is_dockers_port_syntax() -> None:
    assert parse_publish("8080:80") == (8080, 80, "tcp", "")
    assert parse_publish("127.0.0.1:53:5353/udp") == (53, 5353, "udp", "127.0.0.1")
    assert parse_publish("[::1]:8443:443") == (8443, 443, "tcp", "::1")
    for bad in ("80", "0:80", "8080:80/icmp", "a:80", "8080:99999"):
        with pytest.raises(UsageError, match="HOST:CONTAINER"):
            parse_publish(bad)


# --- the request -----------------------------------------------------------------------------


def _args(**kw: object) -> argparse.Namespace:
    base = dict(manifest=None, images=[], env=[], volume=[], isolator=[], net=[], publish=[])
    return argparse.Namespace(**{**base, **kw})


def test_request_becomes_a_run_spec() -> None:
    args = _args(
        images=["a", f"{PLACEHOLDER}0", "b"],
        env=["K=V"],
        volume=["/h:/in:ro", "tmp:/tmp"],
        isolator=['resource/memory={"limit":"1G"}'],
        net=["bridge", "backend"],
        publish=["8080:80"],
    )
    spec = pod_request(args, [["/bin/x", "1"]]).spec()
    assert [(a.image, list(a.exec)) for a in spec.apps] == [("a", ["/bin/x", "1"]), ("b", [])]
    assert all([(kv.key, kv.value) for kv in a.environment] == [("K", "V")] for a in spec.apps)
    assert [(v.name, v.kind, v.source, v.path, v.read_only) for v in spec.volumes] == [
        ("in", "host", "/h", "/in", True),
        ("tmp", "empty", "", "/tmp", False),
    ]
    assert {i.name for i in spec.isolators} == {"resource/memory"}
    assert list(spec.networks) == ["bridge", "backend"]  # kurmad makes the isolator of them
    assert [(p.host_port, p.container_port, p.protocol) for p in spec.ports] == [(8080, 80, "tcp")]


def test_manifest_goes_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = tmp_path / "pod.json"
    manifest.write_bytes(b'{"acKind": "PodManifest"}')
    assert (
        pod_request(_args(manifest=str(manifest)), []).manifest_json == b'{"acKind": "PodManifest"}'
    )
    with pytest.raises(UsageError, match="not both"):
        pod_request(_args(manifest=str(manifest), images=["a"]), [])
    with pytest.raises(UsageError, match="--env, --net cannot go with --manifest"):
        pod_request(_args(manifest=str(manifest), env=["A=1"], net=["host"]), [])


def test_no_image_is_refused() -> None:
    with pytest.raises(UsageError, match="at least one image"):
        pod_request(_args(), [])
