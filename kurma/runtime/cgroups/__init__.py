"""cgroups behind one interface, decided per controller (v1, v2, or a hybrid of both).

Part of the runtime's lowest layer: file I/O under /sys/fs/cgroup, no policy. A host may be
hybrid (memory, pids, cpu ... on v1 hierarchies, cgroup2 holding only hugetlb); a booted
Kurma mounts a pure cgroup2. `CgroupSystem.detect()` finds out which, per controller, and
every `Cgroup` operation writes the files of the interface that serves the controller.
"""

from ._cgroup import Cgroup as Cgroup
from ._cgroup import CgroupStats as CgroupStats
from ._kill import is_frozen as is_frozen
from ._kill import set_frozen as set_frozen
from ._leaf import DAEMON_LEAF as DAEMON_LEAF
from ._leaf import enter_leaf as enter_leaf
from ._parse import CONTROLLERS as CONTROLLERS
from ._parse import CgroupMount as CgroupMount
from ._parse import Placement as Placement
from ._parse import ProcCgroups as ProcCgroups
from ._parse import Version as Version
from ._parse import cpu_quota as cpu_quota
from ._parse import decide as decide
from ._parse import parse_cpu_max as parse_cpu_max
from ._parse import parse_keyed as parse_keyed
from ._parse import parse_limit as parse_limit
from ._parse import parse_mountinfo as parse_mountinfo
from ._parse import parse_proc_cgroup as parse_proc_cgroup
from ._parse import shares_to_weight as shares_to_weight
from ._parse import weight_to_shares as weight_to_shares
from ._system import CgroupSystem as CgroupSystem
from ._system import enable_controllers as enable_controllers
