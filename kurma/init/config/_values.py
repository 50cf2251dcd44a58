"""Value parsers of the boot config: one raw YAML value in, one clean value out, or ValueError.

YAML files and the kernel command line go through the same parsers, so a bad value is reported
the same way from both. Messages say what was expected and show what was given, except for
secrets (`password_hash`), whose value never reaches a log line.
"""

from __future__ import annotations

import enum
import ipaddress
import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any, TypeVar

E = TypeVar("E", bound=enum.Enum)

# The appc AC Name (DESIGN.md), copied rather than imported: importing kurma.aci costs PID 1
# about 0.1 s, paid only when a service's image or isolators need checking.
_AC_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MODULE = re.compile(r"[A-Za-z0-9_-]{1,55}")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@*?\[\]!-]+")
_TTY = re.compile(r"(?:/dev/)?([A-Za-z][A-Za-z0-9]{0,31})")
_UUID = re.compile(r"[0-9A-Fa-f]+(?:-[0-9A-Fa-f]+)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9.-]*")
_SNAKE = re.compile(r"[a-z][a-z0-9_]*")
# crypt(3): $id$[params$]salt$hash, or yescrypt's $y$; no ':' (passwd field separator).
_CRYPT = re.compile(r"\$[0-9a-z]+\$[./0-9A-Za-z$=,+-]+")

_TRUE = {"1", "y", "yes", "on", "true"}
_FALSE = {"0", "n", "no", "off", "false"}


def text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_kind(value)} {value!r}")
    if not value:
        raise ValueError("must not be empty")
    return value


def boolean(value: Any) -> bool:
    """true/false, and the kernel's spellings: 1/0, y/n, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"must be true or false, got {value!r}")


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    """An integer in lo..hi (a numeric string too: command-line values may be quoted)."""

    def parse(value: Any) -> int:
        number = _number(value, int)
        if not lo <= number <= hi:
            raise ValueError(f"must be an integer in {lo}..{hi}, got {value!r}")
        return int(number)

    parse.__doc__ = f"An integer in {lo}..{hi}."
    return parse


def seconds(lo: float, hi: float) -> Callable[[Any], float]:
    """A number of seconds in lo..hi."""

    def parse(value: Any) -> float:
        number = float(_number(value, float))
        if not lo <= number <= hi:
            raise ValueError(f"must be a number of seconds in {lo:g}..{hi:g}, got {value!r}")
        return number

    parse.__doc__ = f"Seconds in {lo:g}..{hi:g}."
    return parse


def factor(value: Any) -> float:
    """A growth factor in 1..10."""
    number = float(_number(value, float))
    if not 1 <= number <= 10:
        raise ValueError(f"must be a number in 1..10, got {value!r}")
    return number


def choice(kind: type[E]) -> Callable[[Any], E]:
    """A member of `kind` by value; '_' and '-' are the same, case does not matter."""

    def parse(value: Any) -> E:
        if isinstance(value, kind):
            return value
        if isinstance(value, str):
            wanted = value.strip().lower().replace("_", "-")
            for member in kind:
                if member.value == wanted:
                    return member
        names = ", ".join(m.value for m in kind)
        raise ValueError(f"must be one of {names}, got {value!r}")

    parse.__doc__ = "One of " + "|".join(m.value for m in kind) + "."
    return parse


def optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, or None for null or an empty string (`kurma.KEY=` unsets a value)."""

    def parse_optional(value: Any) -> Any:
        return None if value is None or value == "" else parse(value)

    first = (parse.__doc__ or "A value").split("\n")[0].rstrip(".")
    parse_optional.__doc__ = f"{first}, or null."
    return parse_optional


def absolute_path(value: Any) -> str:
    """An absolute path, normalised."""
    path = text(value)
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"must be an absolute path, got {path!r}")
    return posixpath.normpath(path)


def hostname(value: Any) -> str:
    """An RFC 1123 host name of at most 64 bytes (the kernel's limit), lowercased."""
    name = text(value).lower().rstrip(".")
    if len(name) > 64 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(
            f"must be a host name (labels of letters, digits and '-', dot-separated, "
            f"at most 64 characters), got {value!r}"
        )
    return name


def host(value: Any) -> str:
    """A host name or an IP address."""
    name = text(value)
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        return hostname(name)
    except ValueError:
        raise ValueError(f"must be a host name or an IP address, got {value!r}") from None


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address."""
    try:
        return str(ipaddress.ip_address(text(value)))
    except ValueError:
        raise ValueError(f"must be an IP address, got {value!r}") from None


def interface_address(value: Any) -> str:
    """An address with its prefix length (CIDR), like 169.254.1.2/16 or fdfe::2/64."""
    cidr = text(value)
    try:
        if "/" not in cidr:
            raise ValueError
        address = ipaddress.ip_interface(cidr)
    except ValueError:
        raise ValueError(
            f"must be an address with a prefix length, like 169.254.1.2/16, got {value!r}"
        ) from None
    net = address.network
    if address.version == 4 and net.prefixlen < 31 and address.ip in (net[0], net[-1]):
        raise ValueError(f"{cidr} is the network's own or broadcast address, not a host's")
    return str(address)


def route_destination(value: Any) -> str:
    """`default`, or a network in CIDR form with no host bits set."""
    dest = text(value)
    if dest == "default":
        return dest
    try:
        return str(ipaddress.ip_network(dest))
    except ValueError:
        pass
    try:
        hint = f"; did you mean {ipaddress.ip_network(dest, strict=False)}?"
    except ValueError:
        hint = ""
    raise ValueError(f"must be 'default' or a network like 169.254.0.0/16, got {value!r}{hint}")


def host_port(default_port: int) -> Callable[[Any], str]:
    """HOST[:PORT] with a host name or IP address (IPv6 in brackets); PORT defaults."""

    def parse(value: Any) -> str:
        given = text(value)
        name, port = _split_port(given)
        try:
            name = host(name)
        except ValueError:
            raise ValueError(
                f"must be HOST:PORT with a host name or IP address, got {given!r}"
            ) from None
        shown = f"[{name}]" if ":" in name else name
        return f"{shown}:{default_port if port is None else port}"

    parse.__doc__ = f"HOST[:PORT] with a host name or IP address; port {default_port} by default."
    return parse


def listen_address(value: Any) -> str:
    """IP:PORT to listen on (IPv6 in brackets), like 0.0.0.0:7443 or [::]:7443."""
    given = text(value)
    name, port = _split_port(given)
    if port is None:
        raise ValueError(f"must be IP:PORT, got {given!r}")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        raise ValueError(
            f"must be an IP address and port like 0.0.0.0:7443, got {given!r}"
        ) from None
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _split_port(given: str) -> tuple[str, int | None]:
    if given.startswith("["):
        name, bracket, rest = given[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"an IPv6 address goes in brackets, like [fdfe::1]:514, got {given!r}")
        port_text = rest[1:] if rest else None
    elif given.count(":") == 1:
        name, _, port_text = given.partition(":")
    else:
        name, port_text = given, None  # a bare IPv6 address or a name without a port
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be in 1..65535, got {given!r}")
    return name, int(port_text)


def module_name(value: Any) -> str:
    """A kernel module name; '-' and '_' are the same to the kernel, we keep '_'."""
    name = text(value)
    if not _MODULE.fullmatch(name):
        raise ValueError(f"must be a module name (letters, digits, '_' and '-'), got {value!r}")
    return name.replace("-", "_")


def interface_pattern(value: Any) -> str:
    """An interface name (at most 15 characters) or a glob pattern like `eth*`."""
    name = text(value)
    is_glob = any(c in name for c in "*?[")
    if not _IFNAME.fullmatch(name) or name in (".", "..") or (len(name) > 15 and not is_glob):
        raise ValueError(
            f"must be an interface name of at most 15 characters or a glob pattern "
            f"like 'eth*', got {value!r}"
        )
    return name


def disk_selector(value: Any) -> str:
    """`LABEL=name` or `UUID=id`; `LABEL:name` too, since on the kernel command line the
    first '=' ends the key. Normalised to `LABEL=name` / `UUID=id`."""
    given = text(value)
    kind, sep, rest = given.replace(":", "=", 1).partition("=")
    kind = kind.upper()
    if sep and rest and kind == "LABEL" and "/" not in rest and "\0" not in rest:
        return f"LABEL={rest}"
    if sep and kind == "UUID" and _UUID.fullmatch(rest):
        return f"UUID={rest}"
    raise ValueError(
        f"must be LABEL=<label> or UUID=<uuid> (LABEL:<label> on the kernel command line), "
        f"got {value!r}"
    )


def tty(value: Any) -> str:
    """A terminal device name under /dev, like ttyS0 or tty1 (a /dev/ prefix is dropped)."""
    match = _TTY.fullmatch(text(value))
    if not match:
        raise ValueError(f"must be a terminal name like ttyS0 or tty1, got {value!r}")
    return match.group(1)


def password_hash(value: Any) -> str:
    """A crypt(3) hash like `$6$salt$hash` or `$y$...` (mkpasswd's output)."""
    if not isinstance(value, str) or not _CRYPT.fullmatch(value):
        # never echo it: it may be a plain password typed by mistake
        raise ValueError(
            "must be a crypt(3) hash such as mkpasswd prints ($6$... or $y$...); "
            "the value given is not one (not shown)"
        )
    return value


def ac_name(value: Any) -> str:
    """An AC Name: lowercase letters, digits and '-', starting and ending alphanumeric."""
    name = text(value)
    if not _AC_NAME.fullmatch(name):
        raise ValueError(
            f"must be lowercase letters, digits and '-', starting and ending alphanumeric, "
            f"got {value!r}"
        )
    return name


def ac_identifier_prefix(value: Any) -> str:
    """An image name prefix such as `example.com/app` (an AC Identifier); '' means all."""
    if value in (None, ""):
        return ""
    from kurma.aci import is_ac_identifier  # lazily: see _AC_NAME

    prefix = text(value)
    if not is_ac_identifier(prefix):
        raise ValueError(f"must be an image name prefix like example.com/app, got {value!r}")
    return prefix


def image_reference(value: Any) -> str:
    """An image: NAME[:VERSION][,LABEL=VALUE...] or an image ID `sha512-...`."""
    from kurma.errors import ValidationError
    from kurma.store import parse_image_ref  # lazily: see _AC_NAME

    ref = text(value)
    try:
        parse_image_ref(ref)
    except ValidationError as e:
        raise ValueError(e.message) from None
    return ref


def argv(value: Any) -> tuple[str, ...]:
    """A command: a list of strings, or one string split the way a shell would."""
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as e:
            raise ValueError(f"cannot split {value!r} into words: {e}") from None
    elif isinstance(value, list | tuple) and all(isinstance(w, str) for w in value):
        words = list(value)
    else:
        raise ValueError(f"must be a command (a list of strings or one string), got {value!r}")
    if not words or not words[0]:
        raise ValueError("must not be empty")
    return tuple(words)


def exec_argv(value: Any) -> tuple[str, ...]:
    """A command whose program is an absolute path (appc's rule for an app's exec)."""
    words = argv(value)
    if not words[0].startswith("/"):
        raise ValueError(f"the program must be an absolute path, got {words[0]!r}")
    return words


def env_name(value: Any) -> str:
    """An environment variable name (appc: [A-Za-z_][A-Za-z_0-9.-]*)."""
    name = text(value)
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"must be an environment variable name, got {value!r}")
    return name


def env_value(value: Any) -> str:
    """An environment value: a string; numbers and booleans as YAML wrote them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, got {_kind(value)} {value!r}")


def snake_key(value: Any) -> str:
    """A kurmad setting name (lowercase snake_case; '-' is read as '_')."""
    name = text(value).replace("-", "_")
    if not _SNAKE.fullmatch(name):
        raise ValueError(f"must be a kurmad setting name like state_dir, got {value!r}")
    return name


def scalar(value: Any) -> Any:
    """A string, number, boolean or null (kurmad validates its settings itself)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"must be a string, number or boolean, got {_kind(value)}")


def isolator_name(value: Any) -> str:
    """A known isolator name, like resource/memory or host/api-access."""
    from kurma.aci import isolator_types  # lazily: see _AC_NAME

    name = text(value)
    if name not in isolator_types():
        known = ", ".join(sorted(isolator_types()))
        raise UnknownName(f"unknown isolator {name!r} (known: {known})")
    return name


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _number(value: Any, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    if isinstance(value, int) or (kind is float and isinstance(value, float)):
        return value
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    what = "an integer" if kind is int else "a number"
    raise ValueError(f"must be {what}, got {value!r}")


class UnknownName(ValueError):
    """A map key that names nothing known (reported as an unknown key, not a bad value)."""
