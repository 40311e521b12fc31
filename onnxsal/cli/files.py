"""Writing into an output folder: one writer at a time, whole files or none.

A run takes an exclusive lock on the folder (`.onnxsal/lock`, an flock the
kernel releases however the process ends; it holds `host:pid` for the message
another run gets). Files are written under a temporary name unique to the host
and process, flushed to disk, then renamed into place, so a crash, a kill or a
full disk leaves the last complete file or none; temporaries of processes that
are gone are removed by the next run. POSIX only (flock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from onnxsal.errors import OnnxsalError

STATE = ".onnxsal"  # the folder's own bookkeeping: lock and journal
PARTIAL = ".partial"  # the marker of temporary names
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
TEMPORARY = re.compile(r"\..+\.([0-9a-f]{6})-(\d+)-[0-9a-f]{8}" + re.escape(PARTIAL))


class DiskFullError(OnnxsalError):
    """The disk filled up: no later input could be written either."""


class FolderGoneError(OnnxsalError):
    """The output folder was removed or replaced under the run: its lock keeps no one out."""


def temporary_name(path: Path) -> Path:
    """A name beside `path` that no other process (or call), on any host, uses."""
    token = f"{HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{token}{PARTIAL}")


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """write(tmp), flush it to disk, then rename: a reader, a crash or a power cut never
    finds half a file under `path`."""
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise written_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def written_error(path: Path, exc: OSError) -> OnnxsalError:
    """The error to raise for a failed write: a full disk stops the run, others one file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"the disk is full writing '{path}'; free space, then rerun with --resume "
            "(what is done is kept)."
        )
    return OnnxsalError(f"cannot write '{path}' ({exc.strerror or exc}).")


class FolderLock:
    """The lock a run holds on its output folder (see the module doc)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / STATE / "lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        state = self.folder / STATE
        try:
            if state.is_symlink():
                raise OnnxsalError(f"'{state}' is a symbolic link; choose another -o.")
            state.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise OnnxsalError(
                f"cannot write to output folder '{self.folder}' ({exc.strerror}); choose "
                "another with -o."
            ) from exc
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            host, _, pid = os.pread(self.fd, 300, 0).decode(errors="replace").rpartition(":")
            self.release()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                where = f" on {host}" if host and host != socket.gethostname() else ""
                raise OnnxsalError(
                    f"another onnxsal run (pid {pid.strip() or '?'}{where}) is writing to "
                    f"{self.folder}; wait for it or choose another -o."
                ) from None
            raise OnnxsalError(
                f"the file system of '{self.folder}' does not support locks ({exc.strerror}); "
                "choose an -o on a local disk."
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{socket.gethostname()}:{os.getpid()}".encode(), 0)

    def check(self) -> None:
        """Refuse to go on if the folder was removed or replaced under the run (its lock
        would no longer keep another run out)."""
        try:
            held, there = os.fstat(self.fd), os.stat(self.path, follow_symlinks=False)
        except OSError:
            there = None
        if there is None or (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
            raise FolderGoneError(
                f"the output folder '{self.folder}' was removed or replaced during the run; "
                "rerun with --resume."
            )

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[FolderLock]:
    """Hold the folder's lock for a run; another run gets one clear line, not a race."""
    lock = FolderLock(folder)
    lock.acquire()
    try:
        remove_stale_partials(folder)
        yield lock
    finally:
        lock.release()


def remove_stale_partials(folder: Path) -> None:
    """Temporaries of processes that are gone (a live one, of a run into a folder inside
    this one say, is left alone)."""
    for root, _, names in os.walk(folder):
        for name in names:
            found = TEMPORARY.fullmatch(name)
            if found and found[1] == HOST and not _alive(int(found[2])):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a pid reused by this very run: nothing of ours is being written yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def holds_results(folder: Path) -> bool:
    """Whether a folder is an onnxsal output folder (never walked as input)."""
    return (folder / STATE).is_dir()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (a summary is written whole)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (ValueError, OSError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (either may not exist yet)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def refuse_overwriting(out: Path, *sources: str | Path | None) -> None:
    """An output may never replace what the command reads."""
    for source in sources:
        if source is not None and Path(source).exists() and same_file(out, Path(source)):
            raise click.BadParameter(
                f"'{out}' is also what this command reads; choose another output path.",
                param_hint="-o",
            )
