"""Why a mutual-TLS connection to kurmad failed, in words (grpc says `Socket closed`).

When a call over tcp:// fails as UNAVAILABLE, `diagnose` redoes the handshake with Python's
`ssl` (nothing verified, so that it gets to see kurmad's certificate), then checks what the
TLS library checked, one by one, naming the certificate and the check that fails:

- our own client certificate: readable, in its validity period, with its own key;
- kurmad's server certificate against the CA we were given (`--ca`): signed by it, in its
  validity period, issued for the host name or address we connect to;
- when all of that holds, kurmad refused *our* certificate: issued by another CA than the
  one kurmad trusts (its own certificate's issuer is shown, which is usually that CA).

It imports `cryptography` only when a connection has failed already.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
from typing import Any

_TIMEOUT = 5.0


def diagnose(address: str, cert: str, key: str, ca: str) -> str | None:
    """One line naming the certificate check that fails for `address` (HOST:PORT), or None
    when none does (kurmad is not listening, or the failure is not about certificates)."""
    from cryptography import x509

    try:
        ca_cert = x509.load_pem_x509_certificate(_read(ca))
        ours = x509.load_pem_x509_certificate(_read(cert))
    except (OSError, ValueError) as e:
        return f"cannot load the TLS files: {e}"
    problem = _validity(ours, f"our client certificate {cert} ({_cn(ours)})")
    if problem:
        return problem
    if not _key_matches(ours, key):
        return f"the key {key} does not belong to our client certificate {cert} ({_cn(ours)})"
    host, port = _split(address)
    try:
        server_der = _server_certificate(host, port, cert, key)
    except OSError:
        return None  # nobody listens, or the connection dies for another reason
    server = x509.load_der_x509_certificate(server_der)
    what = f"kurmad's server certificate ({_cn(server)}, issued by {_issuer(server)})"
    if not _signed_by(server, ca_cert):
        ca_name = _ca_name(ca_cert)
        return f"{what} is not signed by the CA {ca} ({ca_name}): give kurmad's CA as --ca"
    problem = _validity(server, what)
    if problem:
        return problem
    if not _names(server, host):
        names = ", ".join(_san_names(server)) or "no names"
        return f"{what} is not for {host} (it names {names}): connect by one of those names"
    alert = _refusal(host, port, cert, key, ca)
    if alert is None:
        return None  # the handshake holds: not a certificate problem
    if _authority(ours) != _authority(server):
        return (
            f"kurmad refused our client certificate {cert} ({_cn(ours)}, issued by "
            f"{_issuer(ours)}): kurmad trusts client certificates of its own CA, and its "
            f"certificate is issued by {_issuer(server)}; get one from that CA "
            f"(`kurmactl pki issue client`)"
        )
    return (
        f"kurmad refused our client certificate {cert} ({_cn(ours)}, issued by "
        f"{_issuer(ours)}) during the TLS handshake ({alert}): kurmad's tls_ca is not that CA"
    )


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _server_certificate(host: str, port: int, cert: str, key: str) -> bytes:
    """kurmad's certificate (DER) from a handshake that verifies nothing (OSError if none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # kurmad's certificate arrives before ours is asked for: go on without a usable one
    with contextlib.suppress(ssl.SSLError, OSError):
        context.load_cert_chain(cert, key)
    with (
        socket.create_connection((host, port), timeout=_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("no server certificate")
    return der


def _refusal(host: str, port: int, cert: str, key: str, ca: str) -> str | None:
    """A verified handshake with our certificate: None when kurmad accepts it (it speaks
    first: HTTP/2 settings), else what went wrong. With TLS 1.3 a refused client
    certificate shows only at the first read, as the server's alert."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # checked already, by name
    context.set_alpn_protocols(["h2"])  # gRPC closes connections without it
    try:
        context.load_cert_chain(cert, key)
        with (
            socket.create_connection((host, port), timeout=_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.settimeout(2.0)
            data = tls.recv(1)
    except ssl.SSLError as e:
        return e.reason or str(e)
    except (OSError, ValueError):
        return None
    return None if data else "the connection was closed"


def _key_matches(cert: Any, key: str) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        private = serialization.load_pem_private_key(_read(key), password=None)
    except (OSError, ValueError, TypeError):
        return False
    pem, spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    mine = private.public_key().public_bytes(pem, spki)
    return mine == cert.public_key().public_bytes(pem, spki)


def _validity(cert: Any, what: str) -> str | None:
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        return f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > now:
        return f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return None


def _signed_by(cert: Any, issuer: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _authority(cert: Any) -> bytes | None:
    """The key identifier of the CA that issued `cert` (None when it does not say)."""
    from cryptography import x509

    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier


def _names(cert: Any, host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for name in _san_values(cert):
        if address is not None:
            if name == address:
                return True
        elif isinstance(name, str) and _dns_match(name.lower(), host.lower()):
            return True
    return False


def _dns_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def _san_values(cert: Any) -> list[Any]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *san.get_values_for_type(x509.IPAddress)]


def _san_names(cert: Any) -> list[str]:
    return [str(v) for v in _san_values(cert)]


def _ca_name(cert: Any) -> str:
    """A CA certificate's name and own key identifier."""
    from cryptography import x509

    try:
        key = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return _cn(cert)
    return f"{_cn(cert)} (key {key.hex()[:16]})"


def _cn(cert: Any) -> str:
    return f"CN={_name(cert.subject)}"


def _issuer(cert: Any) -> str:
    """The issuer's name and key identifier (two CAs may both be called `Kurma CA`)."""
    key = _authority(cert)
    return f"CN={_name(cert.issuer)}" + (f" (key {key.hex()[:16]})" if key else "")


def _name(name: Any) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()
