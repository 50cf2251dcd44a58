"""The API's PKI (kurma.api._pki) and `kurmactl pki`: certificate fields, EKUs, the role URI SAN,
file modes, atomic writes, refusing to overwrite, clear errors."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kurma.api import _pki
from kurma.api._pki import (
    PkiError,
    Role,
    common_name,
    init_ca,
    issue_client,
    issue_server,
    role_from_certificate,
    role_uri,
)
from kurma.cli.main import main
from kurma.errors import KurmaError, ValidationError

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca")
    return tmp_path / "ca"


# --------------------------------------------------------------------------- the CA


def test_init_ca_writes_a_p256_self_signed_ca(tmp_path: Path) -> None:
    paths = init_ca(tmp_path / "ca", common_name="Test CA", days=10)
    assert paths == (tmp_path / "ca/ca.crt", tmp_path / "ca/ca.key", tmp_path / "ca/ca.crt")
    assert mode(tmp_path / "ca") == 0o700
    assert mode(paths.key) == 0o600 and mode(paths.cert) == 0o644
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    cert = load(paths.cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test CA"
    cert.verify_directly_issued_by(cert)  # self-signed
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=9, hours=23) < lifetime <= datetime.timedelta(days=10)
    assert cert.not_valid_before_utc < datetime.datetime.now(datetime.UTC)
    assert sorted(p.name for p in paths.cert.parent.iterdir()) == ["ca.crt", "ca.key"]


def test_init_ca_refuses_to_overwrite_unless_forced(ca: Path) -> None:
    before = {p.name: p.read_bytes() for p in ca.iterdir()}
    with pytest.raises(PkiError, match=r"a CA exists already .*ca\.crt.*--force"):
        init_ca(ca)
    assert {p.name: p.read_bytes() for p in ca.iterdir()} == before
    (ca / "ca.crt").unlink()  # half a CA is still a CA: the key alone blocks it
    with pytest.raises(PkiError, match=r"ca\.key"):
        init_ca(ca)
    init_ca(ca, force=True)
    assert (ca / "ca.key").read_bytes() != before["ca.key"]
    assert mode(ca / "ca.key") == 0o600


def test_init_ca_keeps_an_existing_directory_mode_and_rejects_bad_input(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o755)
    os.chmod(tmp_path / "d", 0o755)
    init_ca(tmp_path / "d")
    assert mode(tmp_path / "d") == 0o755  # not ours to change; the key itself is 0600
    (tmp_path / "file").write_text("x")
    with pytest.raises(PkiError, match="not a directory"):
        init_ca(tmp_path / "file")
    with pytest.raises(ValidationError, match="days"):
        init_ca(tmp_path / "e", days=0)
    with pytest.raises(ValidationError, match="common_name"):
        init_ca(tmp_path / "e", common_name="")


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_intact(
    ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = (ca / "ca.key").read_bytes()

    def broken_replace(src, dst, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_pki.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        init_ca(ca, force=True)
    assert sorted(p.name for p in ca.iterdir()) == ["ca.crt", "ca.key"]
    assert (ca / "ca.key").read_bytes() == old


# --------------------------------------------------------------------------- server


def test_issue_server_sans_eku_and_chain(ca: Path, tmp_path: Path) -> None:
    paths = issue_server(
        ca, tmp_path / "srv", ["kurma.example", "*.kurma.example"], ["127.0.0.1", "::1"], 30
    )
    assert paths == tuple(tmp_path / "srv" / n for n in ("server.crt", "server.key", "ca.crt"))
    assert mode(paths.key) == 0o600 and mode(paths.cert) == 0o644 and mode(paths.ca) == 0o644
    assert mode(tmp_path / "srv") == 0o700
    assert paths.ca.read_bytes() == (ca / "ca.crt").read_bytes()
    cert, ca_cert = load(paths.cert), load(ca / "ca.crt")
    cert.verify_directly_issued_by(ca_cert)
    assert common_name(cert) == "kurma.example"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kurma.example", "*.kurma.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert role_from_certificate(cert) is None  # a server certificate has no role


def test_issue_server_ip_only_and_refusals(ca: Path, tmp_path: Path) -> None:
    paths = issue_server(ca, tmp_path / "srv", [], ["169.254.1.1"], 5)
    assert common_name(load(paths.cert)) == "169.254.1.1"
    with pytest.raises(PkiError, match=r"server\.crt.*--force"):
        issue_server(ca, tmp_path / "srv", [], ["169.254.1.1"], 5)
    issue_server(ca, tmp_path / "srv", ["h"], [], 5, force=True)
    assert common_name(load(paths.cert)) == "h"
    with pytest.raises(ValidationError, match="at least one host or IP"):
        issue_server(ca, tmp_path / "x", [], [], 5)
    with pytest.raises(ValidationError, match=r"'bad host!' is not a DNS name"):
        issue_server(ca, tmp_path / "x", ["bad host!"], [], 5)
    with pytest.raises(ValidationError, match=r"'999\.1\.1\.1' is not an IPv4 or IPv6"):
        issue_server(ca, tmp_path / "x", [], ["999.1.1.1"], 5)
    assert not (tmp_path / "x").exists()  # validated before anything was written


# --------------------------------------------------------------------------- clients


@pytest.mark.parametrize("role", list(Role))
def test_issue_client_carries_the_role_as_a_uri_san(ca: Path, tmp_path: Path, role: Role) -> None:
    paths = issue_client(ca, tmp_path / "cli", "alice@example", role.value, 7)
    assert paths.cert.name == "alice@example.crt" and paths.key.name == "alice@example.key"
    assert mode(paths.key) == 0o600 and mode(paths.cert) == 0o644
    cert = load(paths.cert)
    cert.verify_directly_issued_by(load(ca / "ca.crt"))
    assert cert.subject.rfc4514_string() == "CN=alice@example"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(f"kurma:role:{role}")]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not ext(cert, x509.BasicConstraints).value.ca
    assert role_from_certificate(cert) is role
    assert role_from_certificate(paths.cert.read_bytes()) is role
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=6) < lifetime <= datetime.timedelta(days=7)


def test_issue_client_errors(ca: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown role 'root' \(one of reader, operator"):
        issue_client(ca, tmp_path / "c", "bob", "root", 7)
    for name in ("", "../x", "a b", "-x", "x" * 65):
        with pytest.raises(ValidationError, match="not a client name"):
            issue_client(ca, tmp_path / "c", name, "reader", 7)
    with pytest.raises(ValidationError, match="reserved"):
        issue_client(ca, tmp_path / "c", "server", "reader", 7)
    with pytest.raises(ValidationError, match="days"):
        issue_client(ca, tmp_path / "c", "bob", "reader", -1)
    assert not (tmp_path / "c").exists()
    issue_client(ca, tmp_path / "c", "bob", Role.READER, 7)
    with pytest.raises(PkiError, match=r"bob\.crt"):
        issue_client(ca, tmp_path / "c", "bob", Role.ADMIN, 7)
    assert role_from_certificate(load(tmp_path / "c/bob.crt")) is Role.READER
    issue_client(ca, tmp_path / "c", "bob", Role.ADMIN, 7, force=True)
    assert role_from_certificate(load(tmp_path / "c/bob.crt")) is Role.ADMIN


def test_a_missing_or_broken_ca_is_named(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=rf"no CA at {tmp_path}/none: the directory does not"):
        issue_client(tmp_path / "none", tmp_path / "c", "bob", "reader", 7)
    init_ca(tmp_path / "ca")
    (tmp_path / "ca/ca.key").unlink()
    with pytest.raises(PkiError, match=rf"{tmp_path}/ca/ca\.key is missing"):
        issue_server(tmp_path / "ca", tmp_path / "s", ["h"], [], 7)
    init_ca(tmp_path / "other")
    (tmp_path / "ca/ca.key").write_bytes((tmp_path / "other/ca.key").read_bytes())
    with pytest.raises(PkiError, match=r"ca\.key does not belong to the certificate"):
        issue_server(tmp_path / "ca", tmp_path / "s", ["h"], [], 7)
    (tmp_path / "ca/ca.crt").write_text("garbage")
    with pytest.raises(PkiError, match=r"ca\.crt: not a PEM certificate"):
        issue_server(tmp_path / "ca", tmp_path / "s", ["h"], [], 7)
    # A leaf certificate is no CA, even with its key beside it.
    issue_server(tmp_path / "other", tmp_path / "leaf", ["h"], [], 7)
    (tmp_path / "leaf/server.crt").rename(tmp_path / "leaf/ca.crt")
    (tmp_path / "leaf/server.key").rename(tmp_path / "leaf/ca.key")
    with pytest.raises(PkiError, match="is not a CA certificate"):
        issue_client(tmp_path / "leaf", tmp_path / "c", "bob", "reader", 7)
    assert isinstance(PkiError("x"), KurmaError)


def test_issuing_never_clobbers_another_cas_certificate(ca: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    before = (other / "ca.crt").read_bytes()
    for force in (False, True):
        with pytest.raises(PkiError, match=rf"{other} holds another CA"):
            issue_client(ca, other, "bob", "reader", 7, force=force)
    assert (other / "ca.crt").read_bytes() == before
    assert sorted(p.name for p in other.iterdir()) == ["ca.crt", "ca.key"]
    # An output directory with a stale CA copy (say, after `init --force`) needs force.
    issue_client(other, tmp_path / "out", "bob", "reader", 7)
    with pytest.raises(PkiError, match=r"out/ca\.crt is another CA's certificate"):
        issue_client(ca, tmp_path / "out", "carol", "reader", 7)
    paths = issue_client(ca, tmp_path / "out", "carol", "reader", 7, force=True)
    assert paths.ca.read_bytes() == (ca / "ca.crt").read_bytes()
    # Issuing into the CA directory itself leaves its certificate alone.
    issue_client(ca, ca, "dave", "admin", 7)
    assert sorted(p.name for p in ca.iterdir()) == ["ca.crt", "ca.key", "dave.crt", "dave.key"]


def test_a_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", days=2)
    paths = issue_client(tmp_path / "ca", tmp_path / "c", "bob", "reader", 365)
    assert load(paths.cert).not_valid_after_utc == load(tmp_path / "ca/ca.crt").not_valid_after_utc


# --------------------------------------------------------------------------- reading roles


def _craft(ca: Path, sans: list, eku: list | None) -> x509.Certificate:
    """A certificate signed by the CA with arbitrary SANs and EKUs (what _pki never issues)."""
    from cryptography.hazmat.primitives import serialization

    ca_cert = load(ca / "ca.crt")
    ca_key = serialization.load_pem_private_key((ca / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kurma:role:admin")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def test_only_one_uri_san_with_client_auth_makes_a_role(ca: Path) -> None:
    client = [ExtendedKeyUsageOID.CLIENT_AUTH]
    uri = x509.UniformResourceIdentifier
    assert role_from_certificate(_craft(ca, [uri("kurma:role:operator")], client)) is Role.OPERATOR
    # A name that looks like a role is no role: a DNS SAN, an email SAN, the CN.
    assert role_from_certificate(_craft(ca, [x509.DNSName("kurma:role:admin")], client)) is None
    assert role_from_certificate(_craft(ca, [x509.RFC822Name("kurma:role:admin")], client)) is None
    assert role_from_certificate(_craft(ca, [], client)) is None
    # Ambiguous, unknown, wrong case or not for client authentication: no role.
    two = [uri("kurma:role:reader"), uri("kurma:role:admin")]
    assert role_from_certificate(_craft(ca, two, client)) is None
    assert role_from_certificate(_craft(ca, [uri("kurma:role:root")], client)) is None
    assert role_from_certificate(_craft(ca, [uri("kurma:role:Admin")], client)) is None
    server = [ExtendedKeyUsageOID.SERVER_AUTH]
    assert role_from_certificate(_craft(ca, [uri("kurma:role:admin")], server)) is None
    assert role_from_certificate(_craft(ca, [uri("kurma:role:admin")], None)) is None
    # Other URIs beside the role do not disturb it.
    other = [uri("spiffe://example/alice"), uri("kurma:role:reader")]
    assert role_from_certificate(_craft(ca, other, client)) is Role.READER


def test_role_order_is_by_power_not_alphabet() -> None:
    assert Role.ADMIN > Role.OPERATOR > Role.READER
    assert Role.READER < Role.ADMIN and Role.OPERATOR >= Role.OPERATOR
    assert sorted([Role.ADMIN, Role.READER, Role.OPERATOR]) == [
        Role.READER,
        Role.OPERATOR,
        Role.ADMIN,
    ]
    assert max(Role) is Role.ADMIN
    assert Role.ADMIN.allows(Role.READER) and not Role.READER.allows(Role.OPERATOR)
    assert Role.ADMIN == "admin" and {Role.ADMIN: 1}["admin"] == 1
    assert f"{Role.OPERATOR}" == "operator"
    with pytest.raises(TypeError):
        _ = Role.ADMIN < "reader"  # no silent alphabetical comparison
    with pytest.raises(TypeError):
        _ = "reader" > Role.ADMIN  # noqa: SIM300 (the reflected side)
    assert role_uri("admin") == "kurma:role:admin"
    with pytest.raises(ValidationError):
        role_uri("superuser")


# --------------------------------------------------------------------------- kurmactl pki


def test_kurmactl_pki(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    assert main(["pki", "init", "--dir", str(ca), "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {ca}/ca.crt (certificate, 0644)" in out
    assert f"wrote {ca}/ca.key (private key, 0600)" in out

    assert main(["pki", "init", "--dir", str(ca)]) == 1
    assert "a CA exists already" in capsys.readouterr().err
    assert main(["pki", "init", "--dir", str(ca), "--force"]) == 0
    capsys.readouterr()

    srv = tmp_path / "srv"
    argv = ["pki", "issue", "server", "--dir", str(ca), "--out", str(srv)]
    assert (
        main([*argv, "--host", "a.example", "b.example", "--ip", "127.0.0.1", "--ip", "::1"]) == 0
    )
    out = capsys.readouterr().out
    assert f"wrote {srv}/server.key (private key, 0600)" in out
    assert f"wrote {srv}/ca.crt (CA certificate, 0644)" in out
    san = ext(load(srv / "server.crt"), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]
    assert len(san.get_values_for_type(x509.IPAddress)) == 2
    assert main(argv) == 1
    assert "--host/--ip" in capsys.readouterr().err

    argv = ["pki", "issue", "client", "--dir", str(ca), "--name", "ops", "--role", "operator"]
    assert main(argv) == 0  # --out defaults to the CA directory
    out = capsys.readouterr().out
    assert f"--cert {ca}/ops.crt --key {ca}/ops.key --ca {ca}/ca.crt" in out
    assert role_from_certificate(load(ca / "ops.crt")) is Role.OPERATOR
    assert main(argv) == 1
    assert "ops.crt" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:
        main(["pki", "issue", "client", "--dir", str(ca), "--name", "x", "--role", "root"])
    assert exc.value.code == 2
    missing = ["pki", "issue", "client", "--dir", str(tmp_path / "no"), "--name", "x"]
    assert main([*missing, "--role", "admin"]) == 1
    assert "no CA at" in capsys.readouterr().err


def test_cli_role_choices_match_and_the_parser_stays_light() -> None:
    from kurma.cli import _pki as cli_pki

    assert list(cli_pki.ROLE_CHOICES) == [r.value for r in Role]
    code = (
        "import sys; from kurma.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('kurma.api._pki', 'cryptography', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_issue_server_prints_a_kurmad_line_with_absolute_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run with relative directories, `pki issue server` prints a kurmad command line and
    kurmad.yml settings that name the files absolutely, listening on the first --ip (in
    brackets when IPv6; 0.0.0.0 with host names only) and --port; kurmad's own config
    parser accepts both."""
    import shlex

    from kurma.api._config import check, load_config

    monkeypatch.chdir(tmp_path)
    assert main(["pki", "init", "--dir", "ca"]) == 0
    assert f"--dir {tmp_path}/ca " in capsys.readouterr().out
    argv = [
        "pki",
        "issue",
        "server",
        "--dir",
        "ca",
        "--out",
        "srv",
        "--ip",
        "::1",
        "--port",
        "9443",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(x.strip() for x in lines if x.strip().startswith("kurmad "))
    words = shlex.split(line)
    assert words[1:3] == ["--listen", "[::1]:9443"]
    config = check(load_config(["--config", "/dev/null", *words[1:]]))
    assert config.listen == "[::1]:9443"
    assert config.tls_cert == f"{tmp_path}/srv/server.crt"
    assert config.tls_ca == f"{tmp_path}/srv/ca.crt"
    assert f"  tls_key: {tmp_path}/srv/server.key" in lines

    argv = ["pki", "issue", "server", "--dir", "ca", "--out", "byname", "--host", "kurma.lan"]
    assert main(argv) == 0
    assert "kurmad --listen 0.0.0.0:7443 " in capsys.readouterr().out
