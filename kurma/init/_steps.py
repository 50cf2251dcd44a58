"""The boot as data: an ordered list of named steps, and the runner that logs and records them.

A step is an object (name, function, failure policy, the steps it needs), so a test can assert
`[s.name for s in boot_plan()]`. The runner writes one console line when a step starts and one
when it ends (with its duration), and keeps a `BootLog` the API can serve later.

Error policy, decided here once: an exception in a step is recorded with its message and the
boot goes on (`OnFailure.CONTINUE`); only a step whose failure leaves PID 1 unable to run
anything safely stops the boot (`OnFailure.STOP_BOOT`), and then the caller drops to the
emergency shell. A step that needs an earlier one is skipped, with the reason, unless that
one succeeded. Steps not built yet say so (`not built yet: ...`) and are recorded as skipped,
never as done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..reaper import Reaper
from ..services import ServicesFile, write_services_file
from . import _disks, _kmsg, _modules, _mounts, _network, _seed, _services
from ._log import since_start
from ._signals import SignalPipe, disable_ctrl_alt_del
from ._supervisor import Supervisor
from .config import INITRD_FILE, BootConfig, ConfigProblem, load_boot_config

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """How a step ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class OnFailure(enum.Enum):
    """What a failure of this step means for the rest of the boot."""

    CONTINUE = "continue"  # logged; the next steps run (those that need this one are skipped)
    STOP_BOOT = "stop_boot"  # logged; the remaining steps are skipped; emergency shell


class StepSkipped(Exception):  # a signal to the runner, not an error
    """Raised by a step that has nothing to do here; its message is the reason."""


def not_built(what: str) -> StepSkipped:
    """The honest answer of a step that is not implemented yet."""
    return StepSkipped(f"not built yet: {what}")


@dataclass
class BootContext:
    """What the steps share: inputs from the command line, and what earlier steps made."""

    reaper: Reaper
    kurmad: Supervisor | None = None
    test_mode: bool = False
    config_file: str | None = INITRD_FILE
    cmdline: str | None = None  # None: read /proc/cmdline
    signals: SignalPipe | None = None
    oem_file: str | None = None  # None: the OEM disk's file, when the machine has one
    config: BootConfig = field(default_factory=BootConfig)
    problems: list[ConfigProblem] = field(default_factory=list)
    oem_dir: str | None = None  # where the OEM disk is mounted (files the config names)
    modules: list[_modules.ModuleReport] = field(default_factory=list)
    kmsg: logging.Handler | None = None
    disks: _disks.DiskReport = field(default_factory=_disks.DiskReport)  # roles -> mounts
    dhcp_interfaces: list[str] = field(default_factory=list)  # for the dhcp service
    run_dir: str | None = None  # where kurmad's files go (_services.py); None: not written
    boot_log: BootLog | None = None  # the runner's, so steps can hand it on

    @property
    def machine_init(self) -> bool:
        """PID 1 of the machine, allowed to reboot it: never in test mode."""
        return os.getpid() == 1 and not self.test_mode


StepFunction = Callable[[BootContext], "str | None"]


@dataclass(frozen=True)
class Step:
    """One named boot step; `run` returns a short message for the log, or None."""

    name: str
    run: StepFunction
    on_failure: OnFailure = OnFailure.CONTINUE
    needs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class StepRecord:
    """One line of the boot log: seconds since PID 1 started, duration in seconds."""

    name: str
    outcome: Outcome
    started: float
    duration: float
    message: str = ""

    def to_plain(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "outcome": self.outcome.value}


@dataclass
class BootLog:
    """The records of one boot, in order; `stopped` names a STOP_BOOT step that failed."""

    records: list[StepRecord] = field(default_factory=list)
    stopped: str | None = None

    def outcome(self, name: str) -> Outcome | None:
        return next((r.outcome for r in self.records if r.name == name), None)

    def to_plain(self) -> list[dict[str, Any]]:
        return [r.to_plain() for r in self.records]


class StepRunner:
    """Runs steps in order; every start and end goes to `console`, every end into `boot_log`."""

    def __init__(
        self,
        console: TextIO,
        clock: Callable[[], float] = time.monotonic,
        since: Callable[[], float] = since_start,
    ) -> None:
        self.console = console
        self.clock = clock
        self.since = since
        self.boot_log = BootLog()

    def run(self, steps: Sequence[Step], ctx: BootContext) -> BootLog:
        """Run every step (or skip it, with the reason); never raises for a step's error."""
        for step in steps:
            reason = self._skip_reason(step)
            if reason is not None:
                self._record(step.name, Outcome.SKIPPED, self.since(), 0.0, reason)
                continue
            self._run_one(step, ctx)
        return self.boot_log

    def _skip_reason(self, step: Step) -> str | None:
        if self.boot_log.stopped is not None:
            return f"boot stopped after {self.boot_log.stopped} failed"
        for need in step.needs:
            got = self.boot_log.outcome(need)
            if got is not Outcome.OK:
                return f"needs {need} ({got.value if got else 'not run'})"
        return None

    def _run_one(self, step: Step, ctx: BootContext) -> None:
        started = self.since()
        self._line(f"step {step.name}: start")
        t0 = self.clock()
        try:
            message = step.run(ctx) or ""
            outcome = Outcome.OK
        except StepSkipped as e:
            message, outcome = str(e), Outcome.SKIPPED
        except Exception as e:  # (a step's error never ends PID 1)
            message, outcome = f"{type(e).__name__}: {e}", Outcome.FAILED
            log.debug("step %s failed", step.name, exc_info=True)
        duration = self.clock() - t0
        self._record(step.name, outcome, started, duration, message)
        if outcome is Outcome.FAILED and step.on_failure is OnFailure.STOP_BOOT:
            self.boot_log.stopped = step.name

    def _record(
        self, name: str, outcome: Outcome, started: float, duration: float, message: str
    ) -> None:
        self.boot_log.records.append(StepRecord(name, outcome, started, duration, message))
        tail = f": {message}" if message else ""
        self._line(f"step {name}: {outcome.value} ({duration * 1000:.1f} ms){tail}")

    def _line(self, text: str) -> None:
        self.console.write(f"[{self.since():8.3f}] kurma-init: {text}\n")
        self.console.flush()


# --- the steps of the real boot, in DESIGN.md's order ------------------------------------------

# The kernel's fixed inode numbers of the initial namespaces (include/linux/proc_ns.h).
_INIT_UTS_INO = 0xEFFFFFFE
_INIT_PID_INO = 0xEFFFFFFC
CONSOLE_LOGLEVEL = 4  # KERN_WARNING: the kernel's warnings and worse reach the console


IMAGE_INFO_FILE = "info.json"  # kurma.store's per-image record (_records.INFO_FILE)
SLOW_IMPORTS = ("pyroute2.iproute.linux",)  # needed by host_network; see preload_imports
PRELOAD_NICENESS = 10


def preload_imports(names: Sequence[str] = SLOW_IMPORTS) -> threading.Thread:
    """Import what later steps need in a thread, now: under qemu without KVM importing
    pyroute2 takes a second or more. The kurmad step starts it once kurmad has its settings,
    not earlier: before that, it would only slow PID 1's own path to them (the GIL, and two
    CPUs shared with kurmad), and even then it runs niced, so that kurmad, starting the
    console, gets the CPUs first. The import lock makes the step's own import wait for it."""
    if "pyroute2" not in sys.modules:
        _network.import_without_package_init("pyroute2")

    def load() -> None:
        with contextlib.suppress(OSError):  # a thread's own niceness (Linux): kurmad first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PRELOAD_NICENESS)
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as e:  # the step that needs it reports the error itself
                log.debug("preloading %s failed: %s", name, e)

    thread = threading.Thread(target=load, name="preload", daemon=True)
    thread.start()
    return thread


def install_signals(ctx: BootContext) -> str:
    """Signals arrive through a wakeup pipe; ctrl-alt-del becomes SIGINT on the machine."""
    ctx.signals = SignalPipe.install()
    if ctx.machine_init:
        disable_ctrl_alt_del()
        return "signals on a wakeup pipe; ctrl-alt-del sends SIGINT"
    return "signals on a wakeup pipe"


def _machine_only(ctx: BootContext, what: str) -> None:
    if not ctx.machine_init:
        raise StepSkipped(f"not PID 1 of the machine: {what} left alone")


def leave_initramfs(ctx: BootContext) -> str:
    """rbind / onto /newroot, move it onto /, chroot: containers can pivot_root afterwards."""
    _machine_only(ctx, "the root")
    _mounts.mount_system(mounts=[_mounts.PROC])  # mountinfo tells what / is; moves along
    root_type = _mounts.mounted_type("/")
    if root_type not in _mounts.INITRAMFS_TYPES:
        raise StepSkipped(f"/ is {root_type}, not an initramfs")
    if not _mounts.on_initramfs():
        raise StepSkipped(f"/ ({root_type}) is a bind mount already: left by /init")
    _mounts.leave_initramfs()
    return f"/ ({root_type}) is now a bind mount of itself, private"


def mount_system(ctx: BootContext) -> str:
    """/proc, /sys, /dev (+pts, shm, mqueue), /run, /tmp, cgroup2 with every controller."""
    _machine_only(ctx, "the mounts")
    done = _mounts.mount_system()
    controllers = _mounts.enable_controllers()
    return (
        f"mounted {', '.join(done) or 'nothing new'}; cgroup2 controllers {' '.join(controllers)}"
    )


def _kernel_cmdline(ctx: BootContext) -> str:
    if ctx.cmdline is None:
        with open("/proc/cmdline", encoding="utf-8", errors="replace") as f:
            ctx.cmdline = f.read()
    return ctx.cmdline


def load_config(ctx: BootContext) -> str:
    """Defaults <- the initrd's file <- the OEM disk's file <- kernel command line.

    Finding the OEM disk needs its drivers, so the machine loads the initrd's always-needed
    modules (/etc/kurma/modules) here, before the config's own in `kernel_modules`.
    """
    label, cmdline = _disks.oem_label(_kernel_cmdline(ctx))
    oem_file, oem_note = ctx.oem_file, "OEM file given"
    if oem_file is None:
        oem_file, oem_note = _find_oem(ctx, label)
    ctx.config, ctx.problems = load_boot_config(ctx.config_file, oem_file, cmdline)
    for problem in ctx.problems:
        log.warning("boot config: %s", problem)
    return f"{len(ctx.problems)} problem(s); {oem_note}"


def _find_oem(ctx: BootContext, label: str) -> tuple[str | None, str]:
    """The OEM layer's file, after the base modules; never raises (the config must load)."""
    if not ctx.machine_init:
        return None, "OEM disk not looked for (not PID 1 of the machine)"
    try:
        with open(_modules.BASE_LIST, encoding="utf-8") as f:
            base = _modules.parse_name_list(f.read())
        report = _modules.load_modules(base)
        ctx.modules.append(report)
        log.info("base modules: %s", report.summary())
    except FileNotFoundError:
        pass
    except Exception as e:
        log.error("base modules: %s", e)
    try:
        device = _disks.mount_oem(label)
    except Exception as e:
        log.error("OEM disk %s: %s", label, e)
        return None, f"OEM disk {label}: {e}"
    if device is None:
        return None, f"no OEM disk labelled {label}"
    ctx.oem_dir = _disks.OEM_DIR
    return os.path.join(_disks.OEM_DIR, _disks.OEM_FILE), f"OEM disk {label} ({device})"


def setup_logging(ctx: BootContext) -> str:
    """PID 1's lines into the kernel log too; the console shows only the kernel's warnings."""
    _machine_only(ctx, "the kernel log")
    with contextlib.suppress(OSError):
        _kmsg.allow_kmsg_writes()
    ctx.kmsg = _kmsg.log_to_kmsg()
    if " loglevel=" in f" {_kernel_cmdline(ctx)}":  # the operator's choice stands
        return f"also to {_kmsg.KMSG}; console log level from the kernel command line"
    with contextlib.suppress(OSError):  # our own info lines would otherwise show twice
        _kmsg.set_console_loglevel(CONSOLE_LOGLEVEL)
    return f"also to {_kmsg.KMSG}; console log level {CONSOLE_LOGLEVEL}"


def load_modules(ctx: BootContext) -> str:
    """The config's modules with their dependencies (modules.dep order), by finit_module."""
    names = ctx.config.modules
    if not names:
        return "no modules configured"
    _machine_only(ctx, "the kernel's modules")
    report = _modules.load_modules(names)
    ctx.modules.append(report)
    if report.failed:
        raise RuntimeError(report.summary())
    return report.summary()


def owns_uts_namespace() -> bool:
    """PID 1 of the machine, or PID 1 of a namespace with a UTS namespace of its own."""
    if os.getpid() != 1:
        return False
    if os.stat("/proc/self/ns/pid").st_ino == _INIT_PID_INO:
        return True
    return os.stat("/proc/self/ns/uts").st_ino != _INIT_UTS_INO


def set_hostname(ctx: BootContext) -> str:
    """The configured host name, only where it changes no one else's (never the host's)."""
    if not owns_uts_namespace():
        raise StepSkipped("not PID 1 of a UTS namespace of its own")
    from ..runtime.linux import sethostname

    sethostname(ctx.config.hostname)
    return ctx.config.hostname


def mount_disks(ctx: BootContext) -> str:
    """Each configured disk found, formatted if asked and blank, mounted; roles recorded."""
    if not ctx.config.disks:
        return "no disks configured"
    _machine_only(ctx, "the disks")
    ctx.disks = _disks.prepare_disks(ctx.config)
    if ctx.disks.errors:
        raise _disks.DiskError(ctx.disks.summary())
    return ctx.disks.summary()


def _state_dir(ctx: BootContext) -> str:
    settings = _services.kurmad_settings(ctx.config, Path(ctx.run_dir or "/"), ctx.disks.roles)
    return str(settings.get("state_dir", "/var/lib/kurma"))


def open_image_store(ctx: BootContext) -> str:
    """The store kurmad will use: the initrd's (images imported and rendered at build) or
    an images disk's; names what it holds. Reads the records' JSON directly: the store and
    image code (kurma.store, kurma.aci) cost seconds to import under qemu without KVM, and
    kurmad loads them anyway."""
    _machine_only(ctx, "the machine's image store")
    seeded = _seed.bind_seed()
    for error in seeded.errors:
        log.error("store seed: %s", error)
    images = Path(_state_dir(ctx)) / "images"
    names = set()
    for info in sorted(images.glob(f"*/{IMAGE_INFO_FILE}")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            names.add(str(json.loads(info.read_bytes())["name"]))
    short = sorted(n.removeprefix(_services.IMAGE_PREFIX) for n in names)
    seed_note = f"; {len(seeded.bound)} trees bound from the squashfs" if seeded.bound else ""
    if seeded.errors:
        raise RuntimeError(f"store seed: {'; '.join(seeded.errors)}")
    return f"{len(names)} images: {', '.join(short) or 'none'}{seed_note}"


def setup_host_network(ctx: BootContext) -> str:
    """Loopback, static interfaces and routes, DHCP interfaces up, resolv.conf."""
    _machine_only(ctx, "the host's network")
    report = _network.setup_network(ctx.config.network)
    ctx.dhcp_interfaces = list(report.dhcp)
    if report.errors:
        raise RuntimeError(report.summary())
    return report.summary()


def _kurmad_to_kernel_log(ctx: BootContext) -> None:
    """kurmad's output goes to the kernel log (forwarded, dmesg), not the login console."""
    assert ctx.kurmad is not None
    if ctx.machine_init and os.path.exists(_kmsg.KMSG):
        ctx.kurmad.output = _kmsg.KMSG


def write_boot_log(ctx: BootContext) -> None:
    """The boot log as far as it goes, where kurmad serves it (Host.BootLog)."""
    if ctx.run_dir is None or ctx.boot_log is None:
        return
    document = _services.boot_log_document(ctx.boot_log.to_plain(), ctx.problems)
    _services.write_file(Path(ctx.run_dir) / "boot-log.json", document)


def _write_services(ctx: BootContext, console: bool, services: bool) -> ServicesFile:
    assert ctx.run_dir is not None
    network_ok = ctx.boot_log is None or ctx.boot_log.outcome("host_network") is Outcome.OK
    facts = _services.Facts(list(ctx.dhcp_interfaces), network_ok)
    data = _services.system_services(
        ctx.config, facts, Path(ctx.run_dir), console=console, services=services
    )
    write_services_file(Path(ctx.run_dir) / "services.yml", data)
    return data


EARLY_KURMAD_ENV = "KURMA_KURMAD_PID"  # set by the initrd's /init when it started kurmad


def preload_kurmad(ctx: BootContext) -> str:
    """Start kurmad now, waiting for its settings (`--wait-for-config`): its imports take
    seconds under qemu without KVM, and run while the next steps do. The `kurmad` step
    writes the settings, which lets it go on."""
    _machine_only(ctx, "kurmad's early start")
    if ctx.kurmad is None or ctx.run_dir is None:
        raise StepSkipped("no kurmad command or run directory")
    config = str(Path(ctx.run_dir) / "kurmad.yml")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config)  # a stale one (a reboot keeps nothing in /run, but be sure)
    ctx.kurmad.argv += ["--config", config, "--wait-for-config"]
    _kurmad_to_kernel_log(ctx)
    early = os.environ.pop(EARLY_KURMAD_ENV, "")
    if early.isdigit() and ctx.kurmad.adopt(int(early)):
        return f"{ctx.kurmad} pid {early}, started by /init, waiting for {config}"
    pid = ctx.kurmad.start()
    return f"{ctx.kurmad} pid {pid}, waiting for {config}"


def start_kurmad(ctx: BootContext) -> str:
    """kurmad as a supervised child (restarted with backoff when it dies), with its settings
    and the (so far empty) services file written for it; when it was started early, writing
    the settings is what lets it go on."""
    if ctx.kurmad is None:
        raise RuntimeError("no kurmad command")
    if ctx.run_dir is not None:
        run_dir = Path(ctx.run_dir)
        settings = _services.kurmad_settings(ctx.config, run_dir, ctx.disks.roles)
        networks = _write_networks(ctx, settings)
        _services.write_file(run_dir / "kurmad.yml", _services.dump_document(settings))
        write_services_file(run_dir / "services.yml", ServicesFile())
        write_boot_log(ctx)
        if ctx.machine_init:
            preload_imports()  # for host_network, while the console starts
        if "--config" not in ctx.kurmad.argv:
            ctx.kurmad.argv += ["--config", str(run_dir / "kurmad.yml")]
    else:
        networks = ""
    _kurmad_to_kernel_log(ctx)
    if ctx.kurmad.pid is not None:
        return f"{ctx.kurmad} pid {ctx.kurmad.pid}: settings written, it goes on{networks}"
    pid = ctx.kurmad.start()
    if not pid:
        return f"{ctx.kurmad}: did not start, will retry{networks}"
    return f"{ctx.kurmad} pid {pid}{networks}"


def _write_networks(ctx: BootContext, settings: dict[str, Any]) -> str:
    """The boot config's networks into kurmad's networks_dir, before kurmad reads it; a
    failure is logged (kurmad starts anyway, its pods without those networks). Outside the
    machine only into a networks_dir the config names (never the host's /etc/kurma/net.d)."""
    if not ctx.config.networks:
        return ""
    if not ctx.machine_init and "networks_dir" not in ctx.config.kurmad:
        return "; networks not written (not PID 1 of the machine)"
    directory = Path(str(settings.get("networks_dir") or _services.NETWORKS_DIR))
    try:
        names = _services.write_networks(ctx.config, directory)
    except OSError as e:
        log.error("networks: %s", e)
        return f"; networks not written: {e}"
    return f"; networks {', '.join(names)} in {directory}"


def start_services(ctx: BootContext) -> str:
    """The system services, handed to kurmad's supervisor (it starts them in order)."""
    if ctx.run_dir is None:
        raise StepSkipped("no run directory (test mode): no services file")
    console = ctx.boot_log is None or ctx.boot_log.outcome("console") is Outcome.OK
    data = _write_services(ctx, console=console, services=True)
    names = [n for n in data.services if n != "console" or not console]
    return f"{len(names)} handed to kurmad: {', '.join(names) or '-'}"


def start_console(ctx: BootContext) -> str:
    """The console service, handed to kurmad alone, before the network and the other
    services: an operator can log in while they start (and see them start)."""
    if ctx.run_dir is None:
        raise StepSkipped("no run directory (test mode): no services file")
    if not ctx.config.console.enabled:
        raise StepSkipped("console disabled in the boot config")
    # the auth volume before the file that names it; the services step rewrites the file
    # but never this: a console pod restarted then still finds its shadow
    login = _services.console_auth(ctx.config, Path(ctx.run_dir) / _services.CONSOLE_AUTH_DIR)
    _write_services(ctx, console=True, services=False)
    return f"on {', '.join(ctx.config.console.ttys)} ({login})"


def boot_plan() -> list[Step]:
    """The real boot, in order. Names are stable: logs and the API show them."""
    return [
        Step("signals_and_reaping", install_signals, OnFailure.STOP_BOOT),
        Step("leave_initramfs", leave_initramfs),
        Step("system_mounts", mount_system),
        Step("kurmad_preload", preload_kurmad, needs=("system_mounts",)),
        Step("boot_config", load_config),
        Step("logging", setup_logging),
        Step("kernel_modules", load_modules),
        Step("hostname", set_hostname, needs=("boot_config",)),
        Step("disks", mount_disks),
        Step("image_store", open_image_store),
        # kurmad needs neither the network nor its services to start its runtime and API,
        # which take seconds under qemu without KVM: it gets its settings before the network
        # is set up, and the services (which may need the network) only after.
        Step("kurmad", start_kurmad, needs=("signals_and_reaping",)),
        # The console needs neither: the login prompt comes while the network is set up
        # and the services start (the console's kurmactl shows them coming).
        Step("console", start_console, needs=("kurmad",)),
        Step("host_network", setup_host_network),
        Step("services", start_services, needs=("kurmad",)),
    ]
