"""check_within and oom-score-adj: a pod never gives a pod it creates a lower score than
the lowest its own apps have (an app without the isolator has kurmad's own score)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kurma.runtime._confine import NotPermitted, _oom, check_within


def plan(name: str, *scores: int | None) -> Any:
    rootfs = SimpleNamespace(privileged=False, devices=())
    apps = [
        SimpleNamespace(
            name=f"app{i}",
            rootfs=rootfs,
            capabilities=frozenset(),
            no_new_privileges=True,
            seccomp=None,
            oom_score_adj=score,
        )
        for i, score in enumerate(scores)
    ]
    return SimpleNamespace(name=name, apps=apps, host_namespaces=frozenset(), api_access=None)


def test_a_child_gets_no_lower_oom_score_adj_than_its_creator() -> None:
    own = _oom(None)
    check_within(plan("child", 500), plan("top", 500))
    check_within(plan("child", 900, None), plan("top", 800, own))  # the lowest app counts
    with pytest.raises(NotPermitted, match="oom-score-adj -1000 is below pod top's") as e:
        check_within(plan("child", -1000), plan("top", 500))
    assert "give it 500 or more" in str(e.value)
    if own < 500:  # unset inherits kurmad's own score, lower than the creator's
        with pytest.raises(NotPermitted, match="unset"):
            check_within(plan("child", None), plan("top", 500))
