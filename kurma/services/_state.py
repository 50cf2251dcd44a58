"""What the supervisor shows of each service: its state and the facts behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import KurmaError


class ServiceState(enum.Enum):
    WAITING = "WAITING"  # for its dependencies
    STARTING = "STARTING"  # its pod is being made, or awaits its first health check
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # ended; restarted after a delay
    EXITED = "EXITED"  # ended, and its restart policy says so
    FAILED = "FAILED"  # can never start as it is (dependencies, spec), or gave up
    STOPPED = "STOPPED"  # disabled, or stopped at shutdown

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ServiceStatus:
    """One service as the API lists it."""

    name: str
    state: ServiceState
    pod: str | None = None  # UUID of its current pod
    restarts: int = 0
    last_exit_code: int | None = None
    message: str = ""
    image: str = ""
    depends_on: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    restart: str = "always"
    started_at: float | None = None  # wall clock of its current pod's start


class ServiceNotFound(KurmaError, LookupError):
    """No service has that name (in the services file kurmad was given)."""
