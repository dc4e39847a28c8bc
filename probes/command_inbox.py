"""The training process's side of the command files: take each one safely, at most once.

Everything is opened relative to a descriptor of ``RUN/control/`` held from the start, without
following links, so a directory or file swapped in later cannot redirect a read. A command file
is taken only if it is a regular file, owned by this process's user, not writable by group or
others, and at most ``MAX_COMMAND_BYTES``; then it is moved to ``done/`` *before* it is applied,
so neither a crash nor a resume applies it twice. A refused file is moved to ``refused/``.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lrtui.control import (
    COMMAND_SUFFIX,
    COMMANDS_DIR,
    CONTROL_DIR,
    DONE_DIR,
    MAX_COMMAND_BYTES,
    REFUSED_DIR,
    Command,
    CommandError,
    parse_command,
    valid_id,
)

#: Commands taken per look (the rest wait for the next), so a flooded directory costs little.
MAX_PER_LOOK = 8
#: Entries of ``commands/`` looked at per look.
MAX_LISTED = 256

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@dataclass
class Taken:
    """One file taken from the queue: its command, or why it was refused."""

    name: str
    command: Command | None = None
    refused: str | None = None

    @property
    def id(self) -> str:
        return self.command.id if self.command is not None else self.name.removesuffix(COMMAND_SUFFIX)


class InboxError(Exception):
    """The control directory itself cannot be trusted or used: control stays off."""


def _owner_ok(st: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or st.st_uid == os.getuid()


def _check_dir(st: os.stat_result, where: str) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise InboxError(f"{where} is not a directory")
    if not _owner_ok(st):
        raise InboxError(f"{where} is owned by another user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InboxError(f"{where} is writable by group or others")


class CommandInbox:
    """``RUN/control/``: made (mode 0700) and opened by :meth:`open`, read by :meth:`take`.

    Args:
        run_dir: the run directory (already made by the run's writer).
        run_id: the run's id; a command for another run is refused.
    """

    def __init__(self, run_dir: str | os.PathLike[str], run_id: str | None) -> None:
        self.path = Path(run_dir) / CONTROL_DIR
        self.run_id = run_id
        self.taken_ids: set[str] = set()
        self._fd: int | None = None
        self._queue_fd: int | None = None
        self._seen_bad: set[tuple[str, int, int]] = set()  # refused files it could not move away

    def open(self) -> None:
        """Make and check ``control/`` and its three folders; learn the ids already taken."""
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
        except OSError as exc:
            raise InboxError(f"{self.path} is a symbolic link" if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                             else f"cannot open {self.path}: {exc.strerror}") from None
        self._fd = fd
        _check_dir(os.fstat(fd), str(self.path))
        for name in (COMMANDS_DIR, DONE_DIR, REFUSED_DIR):
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            _check_dir(os.stat(name, dir_fd=fd, follow_symlinks=False), f"{self.path / name}")
        self._queue_fd = os.open(COMMANDS_DIR, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
        done = os.open(DONE_DIR, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
        try:
            # The ledger: every id a process of this run took before (a resumed run keeps it).
            self.taken_ids = {n.removesuffix(COMMAND_SUFFIX) for n in os.listdir(done) if n.endswith(COMMAND_SUFFIX)}
        finally:
            os.close(done)

    def close(self) -> None:
        for fd in (self._queue_fd, self._fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._queue_fd = None

    def take(self, limit: int = MAX_PER_LOOK) -> list[Taken]:
        """The commands queued now, oldest name first (at most ``limit``), each moved out of the
        queue: to ``done/`` when it will be applied, to ``refused/`` otherwise."""
        if self._queue_fd is None:
            return []
        names = []
        with os.scandir(self._queue_fd) as it:
            for entry in it:
                if not entry.name.startswith("."):  # hidden: a client's file still being written
                    names.append(entry.name)
                if len(names) >= MAX_LISTED:
                    break
        out: list[Taken] = []
        for name in sorted(names):
            taken = self._take_one(name)
            if taken is not None:
                out.append(taken)
                if len(out) >= limit:
                    break
        return out

    def _take_one(self, name: str) -> Taken | None:
        queue = self._queue_fd
        try:
            st = os.stat(name, dir_fd=queue, follow_symlinks=False)
        except FileNotFoundError:
            return None
        key = (name, st.st_ino, st.st_mtime_ns)
        if key in self._seen_bad:
            return None
        stem = name.removesuffix(COMMAND_SUFFIX)
        reason = None
        command = None
        if stat.S_ISLNK(st.st_mode):
            reason = "a symbolic link"
        elif not stat.S_ISREG(st.st_mode):
            reason = "not a regular file"
        elif not name.endswith(COMMAND_SUFFIX) or not valid_id(stem):
            reason = f"not named <id>{COMMAND_SUFFIX}"
        else:
            try:
                data = self._read(name, st)
                command = parse_command(data, stem, self.run_id)
            except CommandError as exc:
                reason = str(exc)
        if reason is None and command is not None and command.id in self.taken_ids:
            reason = f"duplicate id {command.id}: a command with it was taken before"
        if reason is not None:
            if not self._move(name, REFUSED_DIR):
                self._seen_bad.add(key)  # refused once; never again while it stays
            return Taken(name, refused=reason)
        assert command is not None
        if not self._move(name, DONE_DIR):
            # Not in the ledger, so not applied: applying it could repeat after a restart.
            self._seen_bad.add(key)
            return Taken(name, refused="cannot move it to the ledger (control/done)")
        self.taken_ids.add(command.id)
        return Taken(name, command=command)

    def _read(self, name: str, st: os.stat_result) -> bytes:
        """The file's bytes, checked on the descriptor actually opened (not on a name that may be
        swapped between the check and the read)."""
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=self._queue_fd)
        except OSError as exc:
            raise CommandError("a symbolic link" if exc.errno == errno.ELOOP
                               else f"cannot open: {exc.strerror}") from None
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                raise CommandError("not a regular file")
            if not _owner_ok(fst):
                raise CommandError("owned by another user")
            if fst.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise CommandError("writable by group or others")
            if fst.st_size > MAX_COMMAND_BYTES:
                raise CommandError(f"larger than {MAX_COMMAND_BYTES} bytes")
            data = os.read(fd, MAX_COMMAND_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_COMMAND_BYTES:
            raise CommandError(f"larger than {MAX_COMMAND_BYTES} bytes")
        return data

    def _move(self, name: str, folder: str) -> bool:
        try:
            target = os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=self._fd)
        except OSError:
            return False
        try:
            os.replace(name, name, src_dir_fd=self._queue_fd, dst_dir_fd=target)
            return True
        except OSError:
            return False
        finally:
            os.close(target)
