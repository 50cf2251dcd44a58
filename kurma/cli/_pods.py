"""`kurmactl run|create|start|ps|inspect|stop|rm|logs|wait|stats`: pods through kurmad.

A pod is named by its name or a unique UUID prefix; the daemon resolves it, so every
command passes what the user typed. Module level stays light (argparse only): the client,
grpc and the generated modules are imported when a command connects.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import _connect
from ._connect import CommandError, UsageError, session


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the pod commands."""
    run = commands.add_parser(
        "run",
        help="create a pod from images and run it (logs and exit code; -d: in the background)",
        usage="kurmactl run [OPTIONS] IMAGE [-- CMD [ARG...] ---] [IMAGE ...]",
        description="Run a pod: one app per image. A command after `--` replaces its "
        "image's exec; `---` ends it, so each image of a multi-app pod can have its own.",
    )
    _pod_flags(run)
    run.add_argument("--rm", action="store_true", help="destroy the pod once it has exited")
    run.add_argument("-d", "--detach", action="store_true", help="start it and print its UUID")
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin open (exec)")
    run.add_argument("-t", "--tty", action="store_true", help="give the app a terminal (exec)")
    run.set_defaults(run=run_run)

    create = commands.add_parser(
        "create",
        help="create a pod without starting it; prints its UUID",
        usage="kurmactl create [OPTIONS] IMAGE [-- CMD [ARG...] ---] [IMAGE ...]",
    )
    _pod_flags(create)
    create.set_defaults(run=run_create)

    start = _pod_command(commands, "start", "start created pods", many=True)
    start.set_defaults(run=run_start)

    ps = commands.add_parser("ps", help="list pods (running and created; -a: all)")
    ps.add_argument("-a", "--all", action="store_true", help="exited pods too")
    ps.add_argument("-q", "--quiet", action="store_true", help="print only UUIDs")
    ps.add_argument("-o", "--output", choices=["table", "wide", "json", "name"], default="table")
    _connect.add_flags(ps)
    ps.set_defaults(run=run_ps)

    inspect = _pod_command(commands, "inspect", "show pods as JSON", many=True)
    inspect.set_defaults(run=run_inspect)

    stop = _pod_command(commands, "stop", "stop running pods (SIGTERM, grace, SIGKILL)", True)
    stop.add_argument(
        "-t", "--time", type=_seconds, default=0.0, metavar="S",
        help="grace period in seconds before SIGKILL (default: the daemon's)",
    )  # fmt: skip
    stop.set_defaults(run=run_stop)

    rm = _pod_command(commands, "rm", "destroy pods (and their subtrees)", many=True)
    rm.add_argument("-f", "--force", action="store_true", help="stop running pods first")
    rm.set_defaults(run=run_rm)

    logs = _pod_command(commands, "logs", "print a pod's output (every app's, or APP's)")
    logs.add_argument("app", nargs="?", default="", metavar="APP", help="only this app")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")
    logs.set_defaults(run=run_logs)

    wait = _pod_command(commands, "wait", "wait for a pod to exit; exits with its code")
    wait.add_argument("--timeout", type=_seconds, metavar="S", help="give up after S seconds")
    wait.set_defaults(run=run_wait)

    stats = _pod_command(commands, "stats", "a pod's cgroup usage: memory, CPU, processes")
    stats.add_argument("-o", "--output", choices=["table", "json"], default="table")
    stats.set_defaults(run=run_stats)

    from . import _exec

    _exec.add_command(commands)


def _pod_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help="the pod's name (default: its first app's)")
    parser.add_argument(
        "-v", "--volume", action="append", default=[], metavar="NAME:/PATH[:ro]",
        help="an empty volume NAME, or a host directory /DIR, mounted at /PATH in every app",
    )  # fmt: skip
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="K=V",
        help="set an environment variable in every app (K alone: its value here)",
    )  # fmt: skip
    parser.add_argument(
        "--isolator", action="append", default=[], metavar="NAME=JSON",
        help='a pod-wide isolator, e.g. resource/memory=\'{"limit":"64M"}\'',
    )  # fmt: skip
    parser.add_argument(
        "--net", action="append", default=[], metavar="NAME",
        help="a CNI network to join (repeatable: eth0, eth1, ...), `host` to share the "
        "host's network, `none` for loopback only (default: kurmad's default network)",
    )  # fmt: skip
    parser.add_argument(
        "-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CONTAINER[/PROTO]",
        help="publish a pod port on the host, through the first network's portmap plugin",
    )  # fmt: skip
    parser.add_argument("--manifest", metavar="FILE", help="a full pod manifest (- for stdin)")
    parser.set_defaults(commands=[])
    _connect.add_flags(parser)


def _pod_command(
    commands: argparse._SubParsersAction, name: str, helptext: str, many: bool = False
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=helptext)
    if many:
        parser.add_argument("pods", nargs="+", metavar="POD", help="name or UUID prefix")
    else:
        parser.add_argument("pod", metavar="POD", help="name or UUID prefix")
    _connect.add_flags(parser)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 86400 seconds")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines")
    return int(text)


# --- run and create ---------------------------------------------------------------------


def _request(args: argparse.Namespace) -> Any:
    """The PodRequest of the flags, checked before anything is sent (UsageError: exit 2)."""
    from ._runspec import pod_request

    return pod_request(args, args.commands)


def _create(s: _connect.Session, request: Any, name: str) -> Any:
    if request.manifest_json is not None:
        return s.client.create_pod(manifest_json=request.manifest_json, name=name)
    return s.client.create_pod(spec=request.spec(), name=name)


def run_create(args: argparse.Namespace) -> int:
    request = _request(args)
    with session(args) as s:
        print(_create(s, request, args.name).uuid)
    return 0


def run_run(args: argparse.Namespace) -> int:
    if args.detach and args.rm:
        raise UsageError("--rm cannot go with -d: wait for the pod, then `kurmactl rm` it")
    request = _request(args)
    with session(args) as s:
        if args.interactive or args.tty:
            from ._exec import require_exec

            require_exec(s, tty=args.tty)
        pod = _create(s, request, args.name)
        if args.detach:
            s.client.start(pod.uuid)
            print(pod.uuid)
            return 0
        return _attached(s, pod, remove=args.rm)


def _attached(s: _connect.Session, pod: Any, remove: bool) -> int:
    """Start the pod, print its apps' output as it comes, and return its exit code."""
    from ._format import LogPrinter, exit_code

    code = 1
    try:
        s.client.start(pod.uuid)
        printer = LogPrinter(sys.stdout.buffer, [a.name for a in pod.apps])
        for chunk in s.client.logs(pod.uuid, follow=True):
            printer.write(chunk.app, chunk.data)
        printer.close()
        done = s.client.wait(pod.uuid)
        for app in done.apps:
            if app.error:
                print(f"kurmactl: app {app.name} did not start: {app.error}", file=sys.stderr)
        code = exit_code(done.apps)
    except KeyboardInterrupt:
        # Like a foreground process: an interrupt ends the pod, not only the watching.
        print(f"kurmactl: stopping pod {pod.name}", file=sys.stderr)
        s.client.stop(pod.uuid)
        code = 130
    finally:
        if remove:
            s.client.destroy(pod.uuid)
    return code


# --- one pod at a time ------------------------------------------------------------------


def _each(args: argparse.Namespace, action: Any) -> int:
    """Run `action(session, pod)` for each POD; a failure is reported and the rest go on
    (exit 1 if any failed), as `docker rm a b c` does."""
    from kurma.client import ClientError

    failed = 0
    with session(args) as s:
        for ref in args.pods:
            try:
                action(s, ref)
            except ClientError as e:
                print(
                    f"kurmactl: {_connect.describe(e, _connect.display(s.target))}", file=sys.stderr
                )
                failed += 1
                if e.code == "UNAVAILABLE":
                    break
            except CommandError as e:
                print(f"kurmactl: {e.message}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


def run_start(args: argparse.Namespace) -> int:
    return _each(args, lambda s, ref: print(s.client.start(ref).uuid))


def run_stop(args: argparse.Namespace) -> int:
    return _each(args, lambda s, ref: print(s.client.stop(ref, grace=args.time).uuid))


def run_rm(args: argparse.Namespace) -> int:
    from kurma.client import pods_pb2

    running = (pods_pb2.POD_STATE_RUNNING, pods_pb2.POD_STATE_STOPPING)

    def remove(s: _connect.Session, ref: str) -> None:
        if not args.force:
            pod = s.client.get(ref)
            if pod.state in running:
                raise CommandError(
                    f"pod {pod.name} ({pod.uuid[:8]}) is running: stop it first, or rm -f"
                )
            ref = pod.uuid
        for uuid in s.client.destroy(ref):
            print(uuid)

    return _each(args, remove)


def run_inspect(args: argparse.Namespace) -> int:
    from ._format import dumps, message_dict

    with session(args) as s:
        docs = [message_dict(s.client.get(ref)) for ref in args.pods]
    print(dumps(docs[0] if len(docs) == 1 else docs))
    return 0


def run_ps(args: argparse.Namespace) -> int:
    from kurma.client import pods_pb2

    from ._format import dumps, message_dict, ps_table

    live = [pods_pb2.POD_STATE_CREATED, pods_pb2.POD_STATE_RUNNING, pods_pb2.POD_STATE_STOPPING]
    with session(args) as s:
        pods = s.client.list_pods(states=[] if args.all else live)
    if args.quiet:
        lines = [p.uuid for p in pods]
    elif args.output == "name":
        lines = [p.name for p in pods]
    elif args.output == "json":
        lines = [dumps([message_dict(p) for p in pods])]
    else:
        lines = [ps_table(pods, wide=args.output == "wide")]
    if lines:
        print("\n".join(lines))
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from ._format import LogPrinter

    # The API's tail: 0 is everything kept, -1 nothing; here --tail 0 means nothing.
    tail = 0 if args.tail is None else (args.tail or -1)
    with session(args) as s:
        apps = [args.app] if args.app else [a.name for a in s.client.get(args.pod).apps]
        printer = LogPrinter(sys.stdout.buffer, apps)
        stream = s.client.logs(args.pod, args.app, follow=args.follow, tail=tail)
        try:
            for chunk in stream:
                printer.write(chunk.app, chunk.data)
        finally:
            stream.cancel()
            printer.close()
    return 0


def run_wait(args: argparse.Namespace) -> int:
    from ._format import exit_code

    with session(args) as s:
        pod = s.client.wait(args.pod, timeout=args.timeout)
    code = exit_code(pod.apps)
    print(code)
    return code


def run_stats(args: argparse.Namespace) -> int:
    from ._format import dumps, message_dict
    from ._output import human_size, table

    with session(args) as s:
        stats = s.client.stats(args.pod)
    if args.output == "json":
        print(dumps(message_dict(stats)))
        return 0
    limit = human_size(stats.memory_limit_bytes) if stats.memory_limit_bytes else "-"
    row = (
        stats.uuid[:8],
        human_size(stats.memory_bytes),
        limit,
        f"{stats.cpu_usage_ns / 1e9:.2f}s",
        str(stats.pids),
        str(stats.oom_kills),
    )
    print(table(("UUID", "MEMORY", "LIMIT", "CPU", "PIDS", "OOM KILLS"), [row]))
    return 0
