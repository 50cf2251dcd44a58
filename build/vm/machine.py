"""A development Kurma machine under qemu: the OEM disk, the PKI, the qemu command line.

The initrd is the same for every machine (DESIGN.md); what makes one machine differ is its
OEM disk, an ext4 image labelled KURMA-OEM holding `kurma.yml` (the console password hash,
the API listener) and the API's server certificate. `make boot` and the VM tests make one
beside the initrd with a fresh PKI:

    pki/        ca.crt ca.key, admin.crt admin.key (a client with the admin role)
    oem/        kurma.yml, server.crt, server.key, ca.crt  -> oem.img (mke2fs -d, no mount)

The guest's API listener (7443) is forwarded to 127.0.0.1:<api_port> on the host; a
syslog receiver on the host is reachable from the guest at 169.254.100.100:<port> (guestfwd).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import qemu

REPO = Path(__file__).resolve().parents[2]
OEM_LABEL = "KURMA-OEM"
GUEST_API_PORT = 7443
GUEST_ADDRESS = "169.254.100.15"  # the first address qemu's DHCP hands out in that net
HOST_ALIAS = "169.254.100.100"  # the guest's name for the host (guestfwd)
OEM_MOUNT = "/run/kurma/oem"


def password_hash(password: str) -> str:
    """A SHA-512 crypt(3) hash, as /etc/shadow holds it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt

        return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_SHA512))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Machine:
    """Everything one boot needs; `argv()` is the qemu command line."""

    vmlinux: Path
    initrd: Path
    oem_image: Path
    pki_dir: Path
    api_port: int
    password: str | None
    guestfwds: dict[int, int] = field(default_factory=dict)  # guest port on HOST_ALIAS -> host
    append: str = qemu.APPEND

    def argv(self, accel: str = "tcg") -> list[str]:
        net = f"user,id=n0,restrict=on,net=169.254.100.0/24,hostfwd=tcp:127.0.0.1:{self.api_port}-:{GUEST_API_PORT}"  # noqa: E501
        for guest_port, host_port in sorted(self.guestfwds.items()):
            net += f",guestfwd=tcp:{HOST_ALIAS}:{guest_port}-tcp:127.0.0.1:{host_port}"
        extra = [
            "-netdev", net, "-device", "virtio-net-pci,netdev=n0",
            "-drive", f"file={self.oem_image},format=raw,if=virtio,readonly=on",
        ]  # fmt: skip
        return qemu.qemu_argv(self.vmlinux, self.initrd, append=self.append, accel=accel,
                              extra=extra)  # fmt: skip

    def client_credentials(self) -> tuple[Path, Path, Path]:
        """(cert, key, ca) of the admin client, for kurmactl --cert/--key/--ca."""
        return (self.pki_dir / "admin.crt", self.pki_dir / "admin.key", self.pki_dir / "ca.crt")

    @property
    def api_target(self) -> str:
        return f"tcp://127.0.0.1:{self.api_port}"


def oem_config(
    password: str | None,
    *,
    autologin: bool = False,
    syslog: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OEM kurma.yml: console login, the API listener, log forwarding, and `extra` on top."""
    config: dict[str, Any] = {
        "console": {"autologin": autologin},
        "api": {
            "listeners": {
                "tcp": {
                    "address": f"0.0.0.0:{GUEST_API_PORT}",
                    "cert": f"{OEM_MOUNT}/server.crt",
                    "key": f"{OEM_MOUNT}/server.key",
                    "ca": f"{OEM_MOUNT}/ca.crt",
                }
            }
        },
    }
    if password is not None:
        config["console"]["password_hash"] = password_hash(password)
    if syslog:
        config["log_forwarding"] = {"target": syslog, "protocol": "tcp"}
    for key, value in (extra or {}).items():
        config[key] = value
    return config


def make_oem_image(oem_dir: Path, image: Path, size_mb: int = 8) -> Path:
    """An ext4 image labelled KURMA-OEM holding `oem_dir` (mke2fs -d: no mount, no root)."""
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    tmp = image.with_name(f".{image.name}.tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "wb") as f:
        f.truncate(size_mb << 20)
    r = subprocess.run(
        [mkfs, "-q", "-F", "-L", OEM_LABEL, "-d", str(oem_dir), "-E", "root_owner=0:0", str(tmp)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"mkfs.ext4 for the OEM disk failed: {r.stderr.strip()}")
    tmp.replace(image)
    return image


def make_pki(pki_dir: Path, oem_dir: Path) -> None:
    """A fresh CA, kurmad's server certificate into the OEM dir, an admin client beside the CA."""
    sys.path.insert(0, str(REPO))
    from kurma.api._pki import init_ca, issue_client, issue_server

    init_ca(pki_dir, common_name="Kurma development CA", force=True)
    issue_server(
        pki_dir, oem_dir, ["kurma", "localhost"], ["127.0.0.1", GUEST_ADDRESS], force=True
    )
    issue_client(pki_dir, pki_dir, "admin", "admin", force=True)


def prepare(
    workdir: Path,
    vmlinux: Path,
    initrd: Path,
    *,
    password: str | None = None,
    autologin: bool = False,
    syslog_port: int | None = None,
    extra_config: dict[str, Any] | None = None,
    oem_text: str | None = None,
    append: str = qemu.APPEND,
) -> Machine:
    """A machine in `workdir`: PKI, OEM disk (its kurma.yml from the arguments, or `oem_text`
    verbatim), ports. A random console password when none is given and no autologin."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki, oem = workdir / "pki", workdir / "oem"
    shutil.rmtree(oem, ignore_errors=True)
    oem.mkdir(mode=0o700)
    make_pki(pki, oem)
    if password is None and not autologin:
        password = secrets.token_urlsafe(9)
    syslog = f"{HOST_ALIAS}:{syslog_port}" if syslog_port else None
    text = oem_text
    if text is None:
        config = oem_config(password, autologin=autologin, syslog=syslog, extra=extra_config)
        text = yaml.safe_dump(config, sort_keys=False)
    (oem / "kurma.yml").write_text(text)
    os.chmod(oem / "kurma.yml", 0o600)
    image = make_oem_image(oem, workdir / "oem.img")
    guestfwds = {syslog_port: syslog_port} if syslog_port else {}
    return Machine(vmlinux, initrd, image, pki, free_port(), password, guestfwds, append)
