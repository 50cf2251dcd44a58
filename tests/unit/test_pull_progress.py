"""`kurmactl pull`'s per-layer progress: bars redrawn in place on a terminal, a line per
finished step in a log."""

from __future__ import annotations

import io

from kurma.api.v1 import images_pb2
from kurma.cli._pullprogress import LayerBars


def progress(*layers: tuple[int, str, int, int]) -> images_pb2.ImportProgress:
    return images_pb2.ImportProgress(layers=[
        images_pb2.LayerStatus(index=i, digest=f"sha256:{str(i) * 64}", size=size, done=done,
                               state=state)
        for i, state, done, size in layers
    ])  # fmt: skip


def test_terminal_redraws_one_line_per_layer() -> None:
    out = io.StringIO()
    bars = LayerBars("app:v1", out=out, tty=True)
    bars.update(progress((0, "downloading", 512, 1024), (1, "exists", 0, 0)))
    bars.update(progress((0, "done", 1024, 1024), (1, "exists", 0, 0)))
    text = out.getvalue()
    assert text.startswith("app:v1: pulling 2 layers\n")
    assert "000000000000: Downloading [##########----------] 512 B / 1.0 KiB\n" in text
    assert "\x1b[2F" in text  # the second drawing goes back over the two lines
    redrawn = "\x1b[2K000000000000: Pull complete\n\x1b[2K111111111111: Already exists\n"
    assert text.endswith(redrawn)


def test_log_gets_a_line_per_finished_step() -> None:
    out = io.StringIO()
    bars = LayerBars("app:v1", out=out, tty=False)
    for state, done in (("waiting", 0), ("downloading", 10), ("downloading", 20),
                        ("downloaded", 30), ("applying", 30), ("done", 30)):  # fmt: skip
        bars.update(progress((0, state, done, 30)))
    lines = out.getvalue().splitlines()
    assert lines == ["app:v1: pulling 1 layers", "000000000000: Download complete",
                     "000000000000: Pull complete"]  # fmt: skip
