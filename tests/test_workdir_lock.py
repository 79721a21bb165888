"""One run per workdir: a second process is refused and named; a dead holder's lock is taken over."""

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ftcal_jax import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLDER = """
import sys, time
from ftcal_jax import workdir_lock
with workdir_lock.hold(sys.argv[1], process_index=0):
  print("locked", flush=True)
  time.sleep(300)
"""


def _start_holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": REPO})
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_second_process_is_refused_and_the_holder_named(tmp_path):
  holder = _start_holder(tmp_path)
  try:
    start = time.time()
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"in use by another run: PID {holder.pid} on .* holds"):
      with workdir_lock.hold(tmp_path, process_index=0):
        pass
    assert time.time() - start < 5  # At once, not after a wait.
  finally:
    holder.kill()
    holder.wait()


def test_a_killed_holder_leaves_a_lock_that_is_taken_over(tmp_path):
  holder = _start_holder(tmp_path)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  with workdir_lock.hold(tmp_path, process_index=0):
    with open(tmp_path / workdir_lock.LOCK_FILE) as f:
      assert f.read().split()[0] == str(os.getpid())


def test_a_lock_held_by_an_orphaned_descriptor_of_a_dead_pid_is_taken_over(tmp_path):
  dead = subprocess.Popen(["true"])
  dead.wait()
  # A process that holds the flock while the file names the dead PID (its parent, say).
  script = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, (sys.argv[2] + ' ' + os.uname().nodename + '\\n').encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(300)\n")
  assert os.uname().nodename == socket.gethostname()
  orphan = subprocess.Popen(
      [sys.executable, "-c", script, str(tmp_path / ".lock"),
       str(dead.pid)], stdout=subprocess.PIPE, text=True)
  try:
    assert orphan.stdout.readline().strip() == "locked"
    with workdir_lock.hold(tmp_path, process_index=0):
      fd = os.open(tmp_path / ".lock", os.O_RDWR)
      with pytest.raises(BlockingIOError):  # The new file is really locked, by us.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      os.close(fd)
  finally:
    orphan.kill()
    orphan.wait()


def test_reentrant_in_one_process_and_released_after_the_outer_block(tmp_path):
  with workdir_lock.hold(tmp_path, process_index=0):
    with workdir_lock.hold(tmp_path, process_index=0):
      pass
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    with pytest.raises(BlockingIOError):  # Still held after the inner block.
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # Free after the outer one.
  os.close(fd)


def test_other_processes_of_a_multi_host_job_do_not_lock(tmp_path):
  holder = _start_holder(tmp_path)
  try:
    with workdir_lock.hold(tmp_path, process_index=1):  # Process 0 of this job holds it; process 1 must not block.
      pass
  finally:
    holder.kill()
    holder.wait()
