"""The API's small PKI: a CA, a server certificate for kurmad's TCP listener, client certificates
that carry a role. Pure `cryptography`; no openssl subprocess.

Layout (PEM everywhere; private keys mode 0600, certificates 0644, each file written under a
temporary name and renamed into place; directories this module creates are 0700):

    CA dir      ca.crt  ca.key
    server out  server.crt  server.key  ca.crt (a copy: what kurmad verifies clients with)
    client out  NAME.crt  NAME.key  ca.crt (a copy: what kurmactl verifies kurmad with)

Keys are ECDSA P-256, signatures ECDSA-SHA256.

How a client certificate carries its role: exactly one URI subjectAltName
`kurma:role:<role>` (`kurma:role:reader`, `kurma:role:operator`, `kurma:role:admin`). The
person's or machine's name is the subject's commonName only, never a SAN, and a client
certificate has no DNS or IP SANs, so a name can never be mistaken for a role: the role is
read only from a SAN of type URI with the `kurma:role:` prefix, and a certificate with none,
several, or an unknown one has no role at all. Client certificates carry the clientAuth EKU
and server certificates the serverAuth EKU (and no role), so neither can stand in for the
other.

There is no revocation list: to withdraw a certificate, make a new CA (`init_ca(force=True)`)
and reissue; keep client certificates short-lived (`days`) where that matters.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
import re
from pathlib import Path
from typing import NamedTuple

from kurma.atomic import write_atomic as _write_atomic
from kurma.errors import KurmaError, ValidationError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
ROLE_URI_PREFIX = "kurma:role:"
DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 365
# Backdate notBefore a little so a peer whose clock lags ours still accepts a fresh certificate.
_BACKDATE = datetime.timedelta(minutes=5)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HOST_RE = re.compile(
    r"^(?=.{1,253}$)(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class PkiError(KurmaError):
    """A PKI operation was refused: missing or unreadable CA, a file that would be overwritten."""


class Role(enum.StrEnum):
    """What a client certificate may do, in increasing power: reader < operator < admin.

    Comparisons follow that order (not the alphabetical one `str` would give):
    `Role.ADMIN > Role.OPERATOR > Role.READER`; `role.allows(needed)` is `role >= needed`.
    Equality and hashing stay those of the string value (`Role.ADMIN == "admin"`).
    """

    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """Whether a caller holding this role may call a method that needs `needed`."""
        return self.rank >= needed.rank

    # Plain strings are refused rather than compared alphabetically (which `str` would do, and
    # which puts admin lowest).
    def __lt__(self, other: object) -> bool:
        return self.rank < _rank_of(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= _rank_of(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > _rank_of(other)

    def __ge__(self, other: object) -> bool:
        return self.rank >= _rank_of(other)

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named `text`; ValidationError naming the choices otherwise."""
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(r.value for r in cls)
            raise ValidationError("role", f"unknown role {text!r} (one of {choices})") from None


_RANK = {Role.READER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def _rank_of(other: object) -> int:
    if not isinstance(other, Role):
        raise TypeError(f"a Role compares only with a Role, not with {other!r}")
    return _RANK[other]


def role_uri(role: Role | str) -> str:
    """The URI SAN that carries `role` in a client certificate: `kurma:role:<role>`."""
    return ROLE_URI_PREFIX + Role.parse(str(role)).value


class CertPaths(NamedTuple):
    """What an operation wrote: the certificate, its private key, and the CA certificate."""

    cert: Path
    key: Path
    ca: Path


# --------------------------------------------------------------------------- writing files


def _make_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PkiError(f"{path} exists and is not a directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _refuse_overwrite(paths: list[Path], force: bool, what: str) -> None:
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise PkiError(
            f"{what} exists already ({', '.join(existing)}); replace it with --force (force=True)"
        )


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValidationError("days", f"validity must be a whole number of days >= 1, not {days!r}")
    return days


# --------------------------------------------------------------------------- the CA


def init_ca(
    dir: str | os.PathLike[str],
    *,
    common_name: str = "Kurma CA",
    days: int = DEFAULT_CA_DAYS,
    force: bool = False,
) -> CertPaths:
    """Make a CA in `dir`: an ECDSA P-256 key (ca.key, 0600) and a self-signed certificate
    (ca.crt, 0644) with basicConstraints CA:true (pathlen 0) and keyUsage keyCertSign, cRLSign.

    Refuses (PkiError) when either file exists, unless `force`. Returns (cert, key, ca) where
    `ca` is the certificate again.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    _check_days(days)
    if not common_name or len(common_name) > 64:
        raise ValidationError("common_name", f"must be 1 to 64 characters, not {common_name!r}")
    directory = _make_dir(Path(dir))
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    _refuse_overwrite([cert_path, key_path], force, "a CA")

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a certificate without its key is useless, a key without a cert is inert.
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, _cert_pem(cert), 0o644)
    return CertPaths(cert_path, key_path, cert_path)


def _load_ca(ca_dir: Path):
    """(certificate, key) of the CA in `ca_dir`; PkiError naming the file on any problem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not ca_dir.is_dir():
        raise PkiError(f"no CA at {ca_dir}: the directory does not exist (run `kurmactl pki init`)")
    for path in (cert_path, key_path):
        if not path.is_file():
            raise PkiError(f"no CA at {ca_dir}: {path} is missing (run `kurmactl pki init`)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as e:
        raise PkiError(f"{cert_path}: not a PEM certificate ({e})") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise PkiError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: not an ECDSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise PkiError(f"{key_path} does not belong to the certificate {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"{cert_path} is not a CA certificate (basicConstraints CA:true missing)")
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        raise PkiError(f"{cert_path}: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert, key


def _issue(
    ca_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    stem: str,
    common_name: str,
    sans: list,
    usage,
    days: int,
    force: bool,
) -> CertPaths:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    _check_days(days)
    ca_cert, ca_key = _load_ca(Path(ca_dir))
    out = _make_dir(Path(out_dir))
    cert_path, key_path, ca_copy = out / f"{stem}.crt", out / f"{stem}.key", out / CA_CERT
    _refuse_overwrite([cert_path, key_path], force, f"a certificate named {stem!r}")
    ca_pem = _cert_pem(ca_cert)
    copy_ca = not (ca_copy.is_file() and ca_copy.read_bytes() == ca_pem)
    if copy_ca and (ca_copy.exists() or ca_copy.is_symlink()):
        if (out / CA_KEY).exists():  # never clobber another CA's certificate
            raise PkiError(f"{out} holds another CA ({out / CA_KEY}); issue into another directory")
        if not force:
            raise PkiError(
                f"{ca_copy} is another CA's certificate; replace it with --force (force=True)"
            )

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # Never outlive the CA: a chain is invalid once its root has expired anyway.
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, _cert_pem(cert), 0o644)
    if copy_ca:
        _write_atomic(ca_copy, ca_pem, 0o644)
    return CertPaths(cert_path, key_path, ca_copy)


def issue_server(
    ca_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    hostnames: list[str],
    ips: list[str],
    days: int = DEFAULT_CERT_DAYS,
    *,
    force: bool = False,
) -> CertPaths:
    """Issue kurmad's TLS server certificate: server.crt, server.key and a copy of ca.crt in
    `out_dir`. DNS SANs from `hostnames` (a leading `*.` wildcard allowed), IP SANs from `ips`
    (IPv4 or IPv6); at least one of them. Subject CN is the first hostname (else the first IP).
    EKU serverAuth only. Refuses to replace an existing server.crt/server.key unless `force`.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    hostnames, ips = list(hostnames or []), list(ips or [])
    if not hostnames and not ips:
        raise ValidationError("hostnames", "a server certificate needs at least one host or IP")
    sans: list = []
    for host in hostnames:
        if not isinstance(host, str) or not _HOST_RE.match(host):
            raise ValidationError("hostnames", f"{host!r} is not a DNS name")
        sans.append(x509.DNSName(host.lower()))
    addresses = []
    for ip in ips:
        try:
            addresses.append(ipaddress.ip_address(ip))
        except ValueError:
            raise ValidationError("ips", f"{ip!r} is not an IPv4 or IPv6 address") from None
    sans.extend(x509.IPAddress(a) for a in addresses)
    common_name = hostnames[0].lower() if hostnames else str(addresses[0])
    return _issue(
        ca_dir,
        out_dir,
        stem="server",
        common_name=common_name,
        sans=sans,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
        force=force,
    )


def issue_client(
    ca_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str,
    role: Role | str,
    days: int = DEFAULT_CERT_DAYS,
    *,
    force: bool = False,
) -> CertPaths:
    """Issue a client certificate for `name` with `role`: NAME.crt, NAME.key and a copy of ca.crt
    in `out_dir`. Subject CN=name; one URI SAN `kurma:role:<role>`; EKU clientAuth only.
    `name` is 1-64 of [A-Za-z0-9._@-], starting with a letter or digit (it names the files).
    Refuses to replace existing files for that name unless `force`.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValidationError(
            "name",
            f"{name!r} is not a client name (1-64 of letters, digits, '.', '_', '@', '-', "
            "starting with a letter or digit)",
        )
    if name in ("ca", "server"):
        raise ValidationError("name", f"{name!r} is reserved (it would clash with {name}.crt)")
    uri = role_uri(role)
    return _issue(
        ca_dir,
        out_dir,
        stem=name,
        common_name=name,
        sans=[x509.UniformResourceIdentifier(uri)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
        force=force,
    )


# --------------------------------------------------------------------------- reading back


def role_from_certificate(cert) -> Role | None:
    """The role a client certificate carries, or None: it must have the clientAuth EKU and
    exactly one `kurma:role:` URI SAN naming a known role. `cert` is an
    `x509.Certificate` or PEM bytes.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if isinstance(cert, bytes | str):
        data = cert.encode() if isinstance(cert, str) else cert
        cert = x509.load_pem_x509_certificate(data)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return None
    roles = [
        u[len(ROLE_URI_PREFIX) :]
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(ROLE_URI_PREFIX)
    ]
    if len(roles) != 1:
        return None
    try:
        return Role(roles[0])
    except ValueError:
        return None


def common_name(cert) -> str | None:
    """The subject commonName of an `x509.Certificate` (or PEM bytes), or None."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if isinstance(cert, bytes | str):
        data = cert.encode() if isinstance(cert, str) else cert
        cert = x509.load_pem_x509_certificate(data)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
