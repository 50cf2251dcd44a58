"""The launcher: the thread-free process that forks pods and their apps (see _server)."""

from ._app import AppStartError as AppStartError
from ._client import Launcher as Launcher
from ._client import LauncherError as LauncherError
from ._exec import ExecStart as ExecStart
from ._spawn import HandlerStart as HandlerStart
from ._spawn import PodStart as PodStart
from ._spawn import PodStarted as PodStarted
