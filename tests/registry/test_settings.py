"""kurma.registry's settings (kurmad.yml `registries:`) and docker config.json credentials."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from kurma.errors import ValidationError
from kurma.registry import (
    Credentials,
    DockerConfig,
    RegistrySettings,
    api_host,
    parse_registry_settings,
)


def test_defaults() -> None:
    settings = parse_registry_settings(None)
    assert settings == RegistrySettings()
    assert settings.default == "docker.io"
    assert settings.certs_dir == "/etc/kurma/certs.d"
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("127.0.0.1:5000") == "127.0.0.1:5000"


def test_full_section() -> None:
    settings = parse_registry_settings(
        {
            "default": "quay.io",
            "mirrors": {"docker.io": ["mirror.lan", "10.0.0.5:5000"]},
            "insecure": ["10.0.0.5:5000", "build.lan"],
            "certs_dir": "/srv/certs.d",
        }
    )
    assert settings.mirrors_for("docker.io") == ("mirror.lan", "10.0.0.5:5000")
    assert settings.mirrors_for("index.docker.io") == ("mirror.lan", "10.0.0.5:5000")
    assert settings.mirrors_for("quay.io") == ()
    assert settings.is_insecure("10.0.0.5:5000")
    assert not settings.is_insecure("10.0.0.5:5001")
    assert settings.is_insecure("build.lan:8080")  # a host alone: any port
    assert not settings.is_insecure("mirror.lan")
    assert settings.qualify("ubuntu").name == "quay.io/ubuntu"
    assert settings.qualify("docker.io/ubuntu").name == "docker.io/library/ubuntu"
    assert RegistrySettings().qualify("ubuntu").name == "docker.io/library/ubuntu"


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"default": "https://quay.io"}, "registries.default"),
        ({"mirrors": ["x"]}, "registries.mirrors"),
        (
            {"mirrors": {"docker.io": ["ok.lan", "http://bad"]}},
            "registries.mirrors['docker.io'][1]",
        ),
        ({"insecure": "host"}, "registries.insecure"),
        ({"insecure": ["host:99999"]}, "registries.insecure[0]"),
        ({"certs_dir": "relative"}, "registries.certs_dir"),
        ({"mirror": {}}, "registries.mirror"),
    ],
)
def test_bad_values_name_the_key(doc: dict, key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_registry_settings(doc)
    assert caught.value.path == key


def test_docker_config_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "config.json"
    config = DockerConfig(path)
    assert config.get("docker.io") is None
    config.set("docker.io", "alice", "pw:with:colons")
    config.set("127.0.0.1:5000", "bob", "pw2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert set(doc["auths"]) == {"https://index.docker.io/v1/", "127.0.0.1:5000"}
    expected = base64.b64encode(b"alice:pw:with:colons").decode()
    assert doc["auths"]["https://index.docker.io/v1/"] == {"auth": expected}
    assert config.get("index.docker.io") == Credentials("alice", "pw:with:colons")
    assert config("127.0.0.1:5000") == Credentials("bob", "pw2")
    assert "pw2" not in repr(config.get("127.0.0.1:5000"))
    assert config.remove("docker.io") and not config.remove("docker.io")
    assert config.get("docker.io") is None


def test_docker_config_reads_docker_forms(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://quay.io/v2/": {"username": "u", "password": "p"},
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"a:b").decode()},
                },
                "credsStore": "desktop",
            }
        )
    )
    config = DockerConfig(path)
    assert config.get("quay.io") == Credentials("u", "p")
    assert config.get("registry-1.docker.io") == Credentials("a", "b")
    config.set("quay.io", "v", "q")
    doc = json.loads(path.read_text())
    assert doc["credsStore"] == "desktop"  # other keys are kept
    assert list(doc["auths"]) == ["https://index.docker.io/v1/", "quay.io"]
