"""Atomic file writes: write a temporary sibling, fsync, then os.replace, so a killed process
leaves either the old file or the new one, never a torn one. A full disk (ENOSPC) is a
:class:`~ms2core.errors.DiskFullError` naming the file, with the temporary removed.
Directories the same way: :func:`staged_directory` builds one in a sibling and moves it into place."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ms2core.errors import DiskFullError


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, or torch's stream writer failing on a full disk (it reports a RuntimeError)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("No space left", "file write failed"))


def disk_full_error(path: str | os.PathLike, exc: BaseException, what: str = "file") -> DiskFullError:
    return DiskFullError(f"no space left on the device writing {what} {path} ({exc})",
                         hint=f"free space under {Path(path).parent} (or write elsewhere) and run again; "
                              "the previous version of the file is unchanged")


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (one of another user's counts): whether a ``.tmp-PID`` file's writer,
    or a worker's parent, is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None], what: str = "file") -> Path:
    """Call ``write(file)`` on a temporary sibling of ``path``, then move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, exc, what) from exc
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def torch_save_atomic(payload, path: str | os.PathLike) -> Path:
    import torch

    return write_atomic(path, lambda f: torch.save(payload, f), what="checkpoint")


@contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target`` to build a directory in; when the block ends it replaces
    ``target`` (the old one is moved aside first and deleted after), and when the block fails it is removed.
    Callers decide beforehand whether an existing ``target`` may be replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    moved_aside = False
    try:
        yield staging
        if target.exists():
            os.replace(target, old)
            moved_aside = True
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if moved_aside and not target.exists():
            os.replace(old, target)  # the new one never arrived: the old one goes back
        raise
    if moved_aside:
        shutil.rmtree(old, ignore_errors=True)
