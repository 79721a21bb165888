"""One run per workdir: an exclusive lock on `workdir/.lock`, held for the whole run.

Two runs on one workdir used to run side by side and mix their caches. `hold(workdir)` takes an exclusive
`fcntl.flock` on `workdir/.lock` and writes this process's PID and host name into it; a second run fails at once
with `WorkdirLockedError`, which names the PID that holds the lock.

Stale locks: the kernel drops a flock when its process dies (kill -9 included), so a dead run never blocks the next.
If the lock is still held but the PID written in the file is a dead process on this host (a child that inherited
the descriptor outlived its parent), the lock file is replaced and the new run takes over.

Multi-host: only process 0 locks. The hosts of one job share the workdir (docs/pods.md); if every host took the
lock on a shared filesystem, host 1 would find host 0's lock and refuse its own job, and where each host has its
own view of the path, a per-host lock would protect nothing the others write. Process 0 is the one writer of the
reports and caches, and a second job's process 0 is refused, which stops that job.

The lock is re-entrant within a process (main.py and train_and_evaluate may both hold it).
"""

import contextlib
import fcntl
import os
import socket
import threading
from typing import Dict, Iterator, List, Optional, Tuple

LOCK_FILE = ".lock"

_HELD: Dict[str, List[int]] = {}  # realpath of the lock file -> [fd, depth].
_GUARD = threading.Lock()


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir."""


def _read_owner(path: str) -> Tuple[Optional[int], str]:
  try:
    with open(path) as f:
      fields = f.read().split()
    return int(fields[0]), fields[1] if len(fields) > 1 else ""
  except (OSError, ValueError, IndexError):
    return None, ""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  return True


def _lock_fd(path: str) -> Optional[int]:
  """An fd holding the exclusive flock on `path`, or None when another open file holds it."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # Python fds are not inherited by child processes.
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  return fd


def _write_owner(fd: int) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
  os.fsync(fd)


def acquire(workdir: str) -> str:
  """Takes the lock on `workdir` (created if missing); returns the lock file's path.

  Raises:
    WorkdirLockedError: a live process holds it; the message names its PID and host.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  with _GUARD:
    if path in _HELD:
      _HELD[path][1] += 1
      return path
    fd = _lock_fd(path)
    if fd is None:
      pid, host = _read_owner(path)
      if pid is not None and host == socket.gethostname() and not _pid_alive(pid):
        # An orphaned descriptor holds the old file: lock a fresh file and put it in its place.
        tmp = f"{path}.{os.getpid()}"
        fd = _lock_fd(tmp)
        os.replace(tmp, path)
      else:
        who = f"PID {pid}" + (f" on {host}" if host else "") if pid is not None else "another process"
        raise WorkdirLockedError(
            f"{workdir} is in use by another run: {who} holds {path}. Wait for that run to finish or stop it, "
            "or use another --workdir. (A lock left by a dead process is taken over by itself.)")
    _write_owner(fd)
    _HELD[path] = [fd, 1]
  return path


def release(workdir: str) -> None:
  """Releases one `acquire` of `workdir`'s lock (the last one unlocks the file, which stays in place)."""
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  with _GUARD:
    held = _HELD.get(path)
    if held is None:
      return
    held[1] -= 1
    if held[1] == 0:
      del _HELD[path]
      fcntl.flock(held[0], fcntl.LOCK_UN)
      os.close(held[0])


@contextlib.contextmanager
def hold(workdir: str, *, process_index: Optional[int] = None) -> Iterator[None]:
  """Holds the workdir's lock for the block; on processes other than 0 it does nothing (see the module doc).

  Args:
    workdir: the run's output directory.
    process_index: this process's index (default jax.process_index()).
  """
  if process_index is None:
    import jax  # pylint: disable=g-import-not-at-top  (only here: the module itself must not need JAX)
    process_index = jax.process_index()
  if process_index != 0:
    yield
    return
  acquire(workdir)
  try:
    yield
  finally:
    release(workdir)
