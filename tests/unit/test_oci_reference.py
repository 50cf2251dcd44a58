"""Image references parse exactly as docker's (distribution/reference ParseNormalizedNamed).

The tables are docker's own normalisation and grammar cases (normalize_test.go and
reference_test.go of distribution/reference), restated as data, plus Kurma's error wording.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kurma.errors import InvalidReference, OciError
from kurma.oci import Reference, is_valid_tag, parse_digest, parse_reference

SHA = "sha256:" + "f" * 64
SHA512 = "sha512:" + "f" * 128
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# text -> (domain, path, tag, digest)
VALID = {
    "ubuntu": ("docker.io", "library/ubuntu", None, None),
    "ubuntu:22.04": ("docker.io", "library/ubuntu", "22.04", None),
    "docker/docker": ("docker.io", "docker/docker", None, None),
    "library/debian": ("docker.io", "library/debian", None, None),
    "docker.io/docker/docker": ("docker.io", "docker/docker", None, None),
    "docker.io/library/debian": ("docker.io", "library/debian", None, None),
    "docker.io/debian": ("docker.io", "library/debian", None, None),
    "index.docker.io/docker/docker": ("docker.io", "docker/docker", None, None),
    "index.docker.io/library/debian": ("docker.io", "library/debian", None, None),
    "index.docker.io/debian": ("docker.io", "library/debian", None, None),
    "127.0.0.1:5000/docker/docker": ("127.0.0.1:5000", "docker/docker", None, None),
    "127.0.0.1:5000/library/debian": ("127.0.0.1:5000", "library/debian", None, None),
    "127.0.0.1:5000/debian": ("127.0.0.1:5000", "debian", None, None),
    "192.168.0.1": ("docker.io", "library/192.168.0.1", None, None),
    "192.168.0.1:80": ("docker.io", "library/192.168.0.1", "80", None),
    "192.168.0.1:8/debian": ("192.168.0.1:8", "debian", None, None),
    "192.168.0.2:25000/debian": ("192.168.0.2:25000", "debian", None, None),
    "[fc00::1]:5000/docker": ("[fc00::1]:5000", "docker", None, None),
    "[fc00::1]:5000/docker/docker": ("[fc00::1]:5000", "docker/docker", None, None),
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian": (
        "[fc00:1:2:3:4:5:6:7]:5000",
        "library/debian",
        None,
        None,
    ),
    "[2001:db8::1]/repo": ("[2001:db8::1]", "repo", None, None),
    "[::1]:5000/repo:tag": ("[::1]:5000", "repo", "tag", None),
    f"docker.io/{HEX64}": ("docker.io", f"library/{HEX64}", None, None),
    "Docker/docker": ("Docker", "docker", None, None),
    "DOCKER/docker": ("DOCKER", "docker", None, None),
    "Foo/bar": ("Foo", "bar", None, None),
    "localhost/foo": ("localhost", "foo", None, None),
    "localhost:5000/foo/bar:v1": ("localhost:5000", "foo/bar", "v1", None),
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev": (
        "docker.io",
        "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        None,
        None,
    ),
    "docker-rules/docker": ("docker.io", "docker-rules/docker", None, None),
    "docker---rules/docker": ("docker.io", "docker---rules/docker", None, None),
    "d/docker": ("docker.io", "d/docker", None, None),
    "jess/t": ("docker.io", "jess/t", None, None),
    "dock__er/docker": ("docker.io", "dock__er/docker", None, None),
    "test_com/foo": ("docker.io", "test_com/foo", None, None),
    "test.com/foo": ("test.com", "foo", None, None),
    "test.com:8080/foo": ("test.com:8080", "foo", None, None),
    "test-com:8080/foo": ("test-com:8080", "foo", None, None),
    "xn--n3h.com:18080/foo": ("xn--n3h.com:18080", "foo", None, None),
    "docker.io/library/foo/bar": ("docker.io", "library/foo/bar", None, None),
    "test:5000/repo": ("test:5000", "repo", None, None),
    f"test:5000/repo:tag@{SHA}": ("test:5000", "repo", "tag", SHA),
    f"test:5000/repo@{SHA}": ("test:5000", "repo", None, SHA),
    "lowercase:Uppercase": ("docker.io", "library/lowercase", "Uppercase", None),
    "sub-dom1.foo.com/bar/baz/quux:some-long-tag": (
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
        None,
    ),
    "b.gcr.io/test.example.com/my-app:test.example.com": (
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        None,
    ),
    f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}": (
        "xn--7o8h.com",
        "myimage",
        "xn--7o8h.com",
        SHA512,
    ),
    "foo_bar.com:8080": ("docker.io", "library/foo_bar.com", "8080", None),
    "foo/foo_bar.com:8080": ("docker.io", "foo/foo_bar.com", "8080", None),
    f"busybox:latest@{SHA}": ("docker.io", "library/busybox", "latest", SHA),
    "dbcc1": ("docker.io", "library/dbcc1", None, None),
    "a" * 63 + ":" + "t" * 128: ("docker.io", "library/" + "a" * 63, "t" * 128, None),
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_valid_references_normalise_like_docker(text: str) -> None:
    domain, path, tag, digest = VALID[text]
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest and str(ref.digest)) == (
        domain,
        path,
        tag,
        digest,
    )


# text -> a fragment of the message a person sees
INVALID = {
    "": "must have at least one component",
    HEX64: "64-byte hexadecimal",
    "https://github.com/docker/docker": "invalid",
    "docker/Docker": "repository name (docker/Docker) must be lowercase",
    "Uppercase:tag": "must be lowercase",
    "test:5000/Uppercase/lowercase:tag": "must be lowercase",
    "docker.io/docker/Docker": "must be lowercase",
    "-docker": "path component '-docker'",
    "-docker/docker": "path component '-docker'",
    "-docker.io/docker/docker": "invalid registry '-docker.io'",
    "docker-/docker": "path component 'docker-'",
    "docker///docker": "path component ''",
    "docker.io/docker///docker": "path component ''",
    "____/____": "path component '____'",
    "_docker/_docker": "path component '_docker'",
    "dock..er/docker": "invalid registry 'dock..er'",  # a '.' makes it a registry
    "dock_.er/docker": "invalid registry 'dock_.er'",  # a '.' makes it a registry
    "dock-.er/docker": "invalid registry 'dock-.er'",  # a '.' makes it a registry
    "docker/": "path component ''",
    "[fc00::1]": "invalid",
    "[fc00::1]:5000": "invalid",
    "fc00::1:5000/debian": "invalid registry",
    "[fe80::1%eth0]:5000/debian": "invalid registry",
    "[2001:db8:3:4::192.0.2.33]:5000/debian": "invalid registry",
    ":justtag": "invalid",
    f"@{SHA}": "invalid",
    "repo@sha256:" + "f" * 34: "sha256 needs 64 hex digits, got 34",
    "repo@sha256:" + "F" * 64: "lowercase hex",
    "validname@invaliddigest:" + "f" * 64: "unsupported digest algorithm 'invaliddigest'",
    "repo@sha256:abc": "invalid digest format",
    "aa/asdf$$^/aa": "path component 'asdf$$^'",
    "foo:-tag": "invalid tag format '-tag'",
    "foo:" + "t" * 129: "invalid tag format",
    "foo:ta g": "invalid",
    "ubuntu\n": "invalid",
    "ubuntu:tag\n": "invalid",
    "caf\u00e9": "invalid",
    "foo:t\u00e4g": "invalid tag format",
    "a/" * 128 + "a:tag": "must not be more than 255 characters",
    "x" * 250 + "/" + "y" * 10: "must not be more than 255 characters",
}


@pytest.mark.parametrize("text", sorted(INVALID))
def test_invalid_references_say_what_is_wrong(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    message = str(info.value)
    assert message.startswith("invalid reference format: ")
    assert INVALID[text] in message
    assert isinstance(info.value, OciError) and isinstance(info.value, ValueError)
    assert info.value.reference == text


def test_uppercase_message_is_dockers() -> None:
    """Docker's wording, so a person can search for it."""
    with pytest.raises(InvalidReference, match="invalid reference format: repository name"):
        parse_reference("docker.io/Library/Ubuntu")


def test_path_limit_counts_the_path_not_the_registry() -> None:
    """255 characters of path are allowed even behind a long registry name."""
    path = "/".join(["a" * 50] * 5)  # 254 characters
    path += "b"
    assert len(path) == 255
    ref = parse_reference("registry.example.com:5000/" + path)
    assert ref.path == path
    with pytest.raises(InvalidReference):
        parse_reference("registry.example.com:5000/" + path + "f")


# (familiar, full name, path, domain, ambiguous spelling or "") from docker's
# TestParseRepositoryInfo: every spelling parses to the same name.
REPOSITORY_INFO = [
    ("fooo/bar", "docker.io/fooo/bar", "fooo/bar", "docker.io", "index.docker.io/fooo/bar"),
    ("ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io", "library/ubuntu"),
    ("nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io", ""),
    ("other/library", "docker.io/other/library", "other/library", "docker.io", ""),
    (
        "127.0.0.1:8000/private/moonbase",
        "127.0.0.1:8000/private/moonbase",
        "private/moonbase",
        "127.0.0.1:8000",
        "",
    ),
    (
        "127.0.0.1:8000/privatebase",
        "127.0.0.1:8000/privatebase",
        "privatebase",
        "127.0.0.1:8000",
        "",
    ),
    (
        "example.com/private/moonbase",
        "example.com/private/moonbase",
        "private/moonbase",
        "example.com",
        "",
    ),
    (
        "example.com:8000/privatebasee",
        "example.com:8000/privatebasee",
        "privatebasee",
        "example.com:8000",
        "",
    ),
    (
        "ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base",
        "library/ubuntu-12.04-base",
        "docker.io",
        "index.docker.io/library/ubuntu-12.04-base",
    ),
    ("foo", "docker.io/library/foo", "library/foo", "docker.io", "docker.io/foo"),
    ("library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar", "docker.io", ""),
    ("store/foo/bar", "docker.io/store/foo/bar", "store/foo/bar", "docker.io", ""),
    ("Foo/bar", "Foo/bar", "bar", "Foo", ""),
    ("FOO/bar", "FOO/bar", "bar", "FOO", ""),
]


@pytest.mark.parametrize("familiar,full,path,domain,ambiguous", REPOSITORY_INFO)
def test_every_spelling_has_one_familiar_and_one_full_name(
    familiar: str, full: str, path: str, domain: str, ambiguous: str
) -> None:
    for text in filter(None, (familiar, full, ambiguous)):
        ref = parse_reference(text)
        assert ref.familiar_name == familiar
        assert ref.name == full
        assert str(ref) == full
        assert (ref.domain, ref.path) == (domain, path)


def test_tag_and_digest_both_kept_and_the_digest_is_the_target() -> None:
    ref = parse_reference(f"busybox:latest@{SHA}")
    assert str(ref) == f"docker.io/library/busybox:latest@{SHA}"
    assert ref.familiar == f"busybox:latest@{SHA}"
    assert ref.target == SHA


@pytest.mark.parametrize(
    "text,target,default",
    [
        ("ubuntu", "latest", "docker.io/library/ubuntu:latest"),
        ("ubuntu:22.04", "22.04", "docker.io/library/ubuntu:22.04"),
        (f"ubuntu@{SHA}", SHA, f"docker.io/library/ubuntu@{SHA}"),
    ],
)
def test_latest_only_when_neither_tag_nor_digest(text: str, target: str, default: str) -> None:
    ref = parse_reference(text)
    assert ref.target == target
    assert str(ref.with_default_tag()) == default


def test_reference_is_hashable_and_spellings_are_equal() -> None:
    assert parse_reference("index.docker.io/library/debian") == parse_reference("debian")
    assert len({parse_reference("debian"), parse_reference("docker.io/debian")}) == 1


@pytest.mark.parametrize(
    "tag,ok",
    [
        ("latest", True),
        ("_x", True),
        ("1.0-rc.1", True),
        ("-x", False),
        ("", False),
        ("a" * 129, False),
    ],
)
def test_is_valid_tag(tag: str, ok: bool) -> None:
    assert is_valid_tag(tag) is ok


# --- round trips --------------------------------------------------------------------------

alnum = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
separator = st.sampled_from([".", "_", "__", "-", "--"])
component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    alnum,
    st.lists(st.tuples(separator, alnum), max_size=3),
)
path = st.lists(component, min_size=1, max_size=4).map("/".join)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domain = st.one_of(
    st.just("docker.io"),
    st.just("localhost"),
    st.builds(lambda a, b: f"{a}.{b}", label, label),
    st.builds(lambda a, p: f"{a}:{p}", label, st.integers(1, 65535)),
    st.just("[::1]:5000"),
)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digest = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
)


def _valid_path(domain: str, path: str) -> str:
    # docker.io prefixes library/ to single-component names; the generator must know it.
    return "library/" + path if domain == "docker.io" and "/" not in path else path


@settings(max_examples=300, deadline=None)
@given(domain, path, st.none() | tag, st.none() | digest)
def test_round_trip_full_and_familiar(
    domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    """str() and the familiar form both parse back to the same reference."""
    ref = Reference(domain, _valid_path(domain, path), tag, digest and parse_digest(digest))
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref
    assert parse_reference(str(parse_reference(ref.familiar))) == ref


def test_familiar_form_never_changes_registry() -> None:
    """docker.io/foo.bar/baz stays spelt in full: docker's short form `foo.bar/baz` would
    name registry foo.bar, a different image from somewhere else."""
    ref = parse_reference("docker.io/foo.bar/baz:1")
    assert ref.familiar == "docker.io/foo.bar/baz:1"
    assert parse_reference(ref.familiar) == ref
    assert parse_reference("docker.io/localhost/x").familiar_name == "docker.io/localhost/x"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_only_invalid_reference_escapes(text: str) -> None:
    """Any text either parses to a reference that round-trips, or raises InvalidReference."""
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return
    assert parse_reference(str(ref)) == ref
