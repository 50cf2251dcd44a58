"""User and group resolution against an image tree: names, numbers, `/path` owners, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kurma.aci import App
from kurma.errors import ValidationError
from kurma.runtime._identity import Identity, parse_group, parse_passwd, resolve_identity

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/:/bin/false
broken line
+nis-entry:x:99:99::/:
app:x:1000:1000::/home/app:/bin/sh
app:x:2000:2000:duplicate, the first wins::/bin/sh
big:x:4294967295:0::/:/bin/sh
"""
GROUP = "root:x:0:\ntty:x:5:\nstaff:x:50:app\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


def app(user: str, group: str, groups: tuple[int, ...] = ()) -> App:
    return App(user=user, group=group, supplementary_gids=groups)


def test_parse_passwd_skips_junk_and_keeps_the_first_entry() -> None:
    """Comments, short lines, NIS markers and out-of-range ids are skipped."""
    assert parse_passwd(PASSWD) == {"root": 0, "daemon": 1, "app": 1000}


def test_parse_group() -> None:
    assert parse_group(GROUP) == {"root": 0, "tty": 5, "staff": 50}


def test_names_resolve_through_the_images_files(tree: Path) -> None:
    """Names come from the image's /etc/passwd and /etc/group."""
    assert resolve_identity(str(tree), "web", app("app", "staff", (5, 5, 7))) == Identity(
        1000, 50, (5, 7)
    )


def test_numbers_are_used_as_they_are(tree: Path) -> None:
    """A number that is not a name is taken as the id, with or without the files."""
    assert resolve_identity(str(tree), "web", app("4242", "77")) == Identity(4242, 77)
    (tree / "etc" / "passwd").unlink()
    assert resolve_identity(str(tree), "web", app("0", "0")) == Identity(0, 0)


def test_a_path_means_the_owner_of_that_file_in_the_image(tree: Path) -> None:
    """`/path`: uid and gid of the file inside the tree (not the host's file of that name)."""
    (tree / "srv").mkdir()
    (tree / "srv" / "data").write_text("")
    ids = resolve_identity(str(tree), "web", app("/srv/data", "/srv/data"))
    assert ids == Identity(os.getuid(), os.getgid())


def test_a_path_symlinked_out_of_the_image_stays_inside(tree: Path) -> None:
    """`/owner -> /../../etc/passwd` resolves to the tree's /etc/passwd, not the host's."""
    (tree / "owner").symlink_to("/../../etc/passwd")
    ids = resolve_identity(str(tree), "web", app("/owner", "0"))
    assert ids.uid == os.stat(tree / "etc" / "passwd").st_uid


def test_passwd_symlinked_to_an_absolute_path_is_read_inside_the_tree(tree: Path) -> None:
    """An image whose /etc/passwd links to `/lib/passwd` reads the tree's /lib/passwd."""
    (tree / "lib").mkdir()
    (tree / "lib" / "passwd").write_text("svc:x:321:321::/:/bin/sh\n")
    (tree / "etc" / "passwd").unlink()
    (tree / "etc" / "passwd").symlink_to("/lib/passwd")
    assert resolve_identity(str(tree), "web", app("svc", "0")).uid == 321
    (tree / "etc" / "passwd").unlink()
    (tree / "etc" / "passwd").symlink_to("../../../../etc/passwd")  # would be the host's
    with pytest.raises(ValidationError):
        resolve_identity(str(tree), "web", app("root-of-the-host-only", "0"))


def test_unknown_user_names_the_app_and_the_field(tree: Path) -> None:
    with pytest.raises(ValidationError) as info:
        resolve_identity(str(tree), "web", app("nobody", "0"))
    assert "app 'web' user" in str(info.value) and "'nobody'" in str(info.value)


def test_unknown_group_names_the_app_and_the_field(tree: Path) -> None:
    with pytest.raises(ValidationError) as info:
        resolve_identity(str(tree), "web", app("0", "wheel"))
    assert "app 'web' group" in str(info.value) and "/etc/group" in str(info.value)


def test_missing_database_is_said_so(tree: Path) -> None:
    """A name with no /etc/passwd in the image says the file is missing."""
    (tree / "etc" / "passwd").unlink()
    with pytest.raises(ValidationError, match="has no /etc/passwd"):
        resolve_identity(str(tree), "web", app("app", "0"))


def test_missing_path_owner_is_an_error(tree: Path) -> None:
    with pytest.raises(ValidationError, match=r"app .web. group.*./no/such."):
        resolve_identity(str(tree), "web", app("0", "/no/such"))
