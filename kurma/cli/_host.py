"""`kurmactl host info|boot-log`, `events`, `version`, `trust`, `service ls|restart|logs`,
`reboot`, `poweroff`: the host through kurmad.

The system services and power are kurma-init's (kurmad supervises the services and signals
PID 1); on a host without it kurmad says so and these commands print its message (exit 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import _connect
from ._connect import session


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the host, events, trust, service and power commands, and version."""
    host = commands.add_parser("host", help="the host kurmad runs on")
    host_sub = host.add_subparsers(dest="host_command", metavar="SUBCOMMAND", required=True)
    info = host_sub.add_parser("info", help="kernel, memory, versions, cgroups, counts")
    info.add_argument("-o", "--output", choices=["text", "json"], default="text")
    _connect.add_flags(info)
    info.set_defaults(run=run_info)
    boot_log = host_sub.add_parser("boot-log", help="kurma-init's boot steps and config problems")
    boot_log.add_argument("-o", "--output", choices=["text", "json"], default="text")
    _connect.add_flags(boot_log)
    boot_log.set_defaults(run=run_boot_log)

    events = commands.add_parser("events", help="print pod and image events as they happen")
    events.add_argument("-o", "--output", choices=["text", "json"], default="text")
    events.add_argument("-n", "--count", type=int, metavar="N", help="stop after N events")
    _connect.add_flags(events)
    events.set_defaults(run=run_events)

    trust = commands.add_parser("trust", help="keys that sign images")
    trust_sub = trust.add_subparsers(dest="trust_command", metavar="SUBCOMMAND", required=True)
    add = trust_sub.add_parser("add", help="trust a key for images under a name prefix")
    add.add_argument("prefix", metavar="PREFIX", help="image name prefix, e.g. example.com/")
    add.add_argument("key", metavar="KEYFILE", help="ASCII-armored public key")
    add.set_defaults(run=run_trust_add)
    ls = trust_sub.add_parser("ls", aliases=["list"], help="list trusted keys")
    ls.set_defaults(run=run_trust_ls)
    rm = trust_sub.add_parser("rm", help="stop trusting the keys of a prefix")
    rm.add_argument("prefix", metavar="PREFIX")
    rm.add_argument("--fingerprint", default="", help="only this key")
    rm.set_defaults(run=run_trust_rm)
    for cmd in (add, ls, rm):
        _connect.add_flags(cmd)

    service = commands.add_parser("service", help="system services (kurma-init)")
    service_sub = service.add_subparsers(dest="service_command", metavar="SUBCOMMAND")
    service_sub.required = True
    sls = service_sub.add_parser("ls", aliases=["list"], help="list services")
    sls.add_argument("-o", "--output", choices=["text", "json"], default="text")
    sls.set_defaults(run=run_service_ls)
    restart = service_sub.add_parser("restart", help="restart a service")
    restart.add_argument("name", metavar="SERVICE")
    restart.set_defaults(run=run_service_restart)
    slogs = service_sub.add_parser("logs", help="a service's output")
    slogs.add_argument("name", metavar="SERVICE")
    slogs.add_argument("-f", "--follow", action="store_true")
    slogs.add_argument("--tail", type=int, default=0, metavar="N")
    slogs.set_defaults(run=run_service_logs)
    for cmd in (sls, restart, slogs):
        _connect.add_flags(cmd)

    for name, helptext in (("reboot", "reboot the host"), ("poweroff", "power the host off")):
        power = commands.add_parser(name, help=helptext)
        _connect.add_flags(power)
        power.set_defaults(run=run_power, power=name)

    version = commands.add_parser("version", help="kurmactl's version, and kurmad's")
    _connect.add_flags(version)
    version.set_defaults(run=run_version)


# --- host -------------------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    with session(args) as s:
        info = s.client.info()
    if args.output == "json":
        from ._format import dumps, message_dict

        print(dumps(message_dict(info)))
        return 0
    print(info_text(info))
    return 0


def info_text(info: Any) -> str:
    """HostInfo as `key: value` lines."""
    from ._format import age
    from ._output import human_size

    cgroups = ", ".join(
        f"{c.name} v{c.version}" if c.version else f"{c.name} -" for c in info.cgroups
    )
    rows = [
        ("hostname", info.hostname),
        ("kernel", info.kernel),
        ("uptime", age(info.uptime_seconds)),
        (
            "memory",
            f"{human_size(info.memory_available_bytes)} available "
            f"of {human_size(info.memory_total_bytes)}",
        ),
        ("kurma", f"{info.kurma_version} (API {info.api_version})"),
        ("cgroups", cgroups or "-"),
        ("pods", str(info.pods)),
        ("images", str(info.images)),
        ("caller", f"{info.caller} ({info.role})"),
    ]
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in rows)


def run_events(args: argparse.Namespace) -> int:
    from ._format import dumps, message_dict

    seen = 0
    with session(args) as s:
        stream = s.client.events()
        try:
            for event in stream:
                if args.output == "json":
                    print(dumps(message_dict(event)).replace("\n", " "), flush=True)
                else:
                    print(event_line(event), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        finally:
            stream.cancel()
    return 0


def event_line(event: Any) -> str:
    """'2024-05-01T12:00:00.123Z pod.exited 1a2b3c4d message'."""
    stamp = event.time.seconds + event.time.nanos / 1e9
    when = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
        + f".{event.time.nanos // 1_000_000:03d}Z"
    )
    subject = event.pod[:8] if event.pod else event.image[:19]
    return " ".join(part for part in (when, event.kind, subject, event.message) if part)


def run_version(args: argparse.Namespace) -> int:
    from kurma import __version__

    print(f"kurmactl {__version__}")
    try:
        with session(args) as s:
            info = s.client.info()
    except _connect.CommandError as e:
        print(f"kurmactl: {e.message}", file=sys.stderr)
        return 0
    print(f"kurmad {info.kurma_version} (API {info.api_version}) at {_connect.display(s.target)}")
    return 0


# --- what later issues bring: the daemon's answer is passed on --------------------------


def _host_stub(s: _connect.Session) -> Any:
    from kurma.api.v1 import host_pb2_grpc
    from kurma.client import host_pb2

    return host_pb2_grpc.HostStub(s.channel), host_pb2


def _trust_stub(s: _connect.Session) -> Any:
    from kurma.api.v1 import images_pb2_grpc
    from kurma.client import images_pb2

    return images_pb2_grpc.TrustStub(s.channel), images_pb2


def run_trust_add(args: argparse.Namespace) -> int:
    try:
        with open(args.key, "rb") as f:
            key = f.read()
    except OSError as e:
        raise _connect.CommandError(f"cannot read the key {args.key}: {e.strerror}") from None
    with session(args) as s:
        stub, pb = _trust_stub(s)
        added = s.unary(stub.Add, pb.AddKeyRequest(prefix=args.prefix, armored_key=key))
    print(f"{added.prefix}  {added.fingerprint}")
    return 0


def run_trust_ls(args: argparse.Namespace) -> int:
    from ._output import table

    with session(args) as s:
        stub, pb = _trust_stub(s)
        keys = s.unary(stub.List, pb.ListKeysRequest()).keys
    print(table(("PREFIX", "FINGERPRINT"), [(k.prefix, k.fingerprint) for k in keys]))
    return 0


def run_trust_rm(args: argparse.Namespace) -> int:
    with session(args) as s:
        stub, pb = _trust_stub(s)
        request = pb.RemoveKeyRequest(prefix=args.prefix, fingerprint=args.fingerprint)
        removed = s.unary(stub.Remove, request).removed
    for key in removed:
        print(f"{key.prefix}  {key.fingerprint}")
    return 0


def run_service_ls(args: argparse.Namespace) -> int:
    with session(args) as s:
        stub, pb = _host_stub(s)
        answer = s.unary(stub.Services, pb.ServicesRequest())
    if args.output == "json":
        from ._format import dumps, message_dict

        print(dumps([message_dict(v) for v in answer.services]))
        return 0
    print(services_table(answer.services))
    for problem in answer.problems:
        print(f"kurmactl: services file: {problem}", file=sys.stderr)
    return 0


def services_table(services: Any) -> str:
    """NAME STATE POD RESTARTS MESSAGE, one row a service."""
    from ._output import table

    rows = [
        (v.name, v.state, v.pod[:8] or "-", str(v.restarts), _service_message(v)) for v in services
    ]
    return table(("NAME", "STATE", "POD", "RESTARTS", "MESSAGE"), rows)


def _service_message(service: Any) -> str:
    text = service.message
    if service.HasField("last_exit_code") and "exit" not in text:
        text = f"last exit {service.last_exit_code}" + (f"; {text}" if text else "")
    return text or "-"


def run_service_restart(args: argparse.Namespace) -> int:
    with session(args) as s:
        stub, pb = _host_stub(s)
        service = s.unary(stub.RestartService, pb.ServiceRef(name=args.name))
    pod = f"  pod {service.pod[:8]}" if service.pod else ""
    message = f"  {service.message}" if service.message else ""
    print(f"{service.name}  {service.state}{pod}{message}")
    return 0


def run_boot_log(args: argparse.Namespace) -> int:
    with session(args) as s:
        stub, pb = _host_stub(s)
        boot = s.unary(stub.BootLog, pb.BootLogRequest())
    if args.output == "json":
        from ._format import dumps, message_dict

        print(dumps(message_dict(boot)))
        return 0
    print(boot_log_text(boot))
    return 0


def boot_log_text(boot: Any) -> str:
    """The step table (STEP OUTCOME STARTED DURATION MESSAGE), then the config problems."""
    from ._output import table

    rows = [
        (
            step.name,
            step.outcome,
            f"{step.started:.3f}s",
            f"{step.duration * 1000:.1f}ms",
            step.message or "-",
        )
        for step in boot.steps
    ]
    lines = [table(("STEP", "OUTCOME", "STARTED", "DURATION", "MESSAGE"), rows)]
    if boot.problems:
        lines.append("")
        lines.append(f"boot config problems ({len(boot.problems)}):")
        lines += [f"  {p}" for p in boot.problems]
    else:
        lines.append("boot config problems: none")
    return "\n".join(lines)


def run_service_logs(args: argparse.Namespace) -> int:
    with session(args) as s:
        stub, pb = _host_stub(s)
        request = pb.ServiceLogsRequest(name=args.name, follow=args.follow, tail=args.tail)
        for chunk in s.stream(stub.ServiceLogs(request)):
            sys.stdout.buffer.write(chunk.data)
            sys.stdout.buffer.flush()
    return 0


def run_power(args: argparse.Namespace) -> int:
    with session(args) as s:
        stub, pb = _host_stub(s)
        method = stub.Reboot if args.power == "reboot" else stub.Poweroff
        s.unary(method, pb.PowerRequest())
    print(f"{args.power}: the host is going down")
    return 0
