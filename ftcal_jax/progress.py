"""Timestamped progress lines on stdout, printed by process 0 only, with a heartbeat for long silent stages."""

import contextlib
import threading
import time
from typing import Optional

import jax


class Progress:
  """Timestamped progress lines on stdout (process 0 only), and a heartbeat for long silent stages.

  Args:
    heartbeat_s: seconds between the "still ..." lines of a `stage`.
    t0: time.time() the timestamps count from (default: now).
  """

  def __init__(self, heartbeat_s: float = 10.0, t0: Optional[float] = None):
    self.t0 = time.time() if t0 is None else t0
    self.heartbeat_s = heartbeat_s

  def __call__(self, msg: str) -> None:
    if jax.process_index() == 0:
      print(f"[{time.time() - self.t0:6.1f}s] {msg}", flush=True)

  @contextlib.contextmanager
  def stage(self, msg: str):
    """Prints `msg`, then a line every heartbeat_s until the block ends, then its duration."""
    self(msg + " ...")
    start, done = time.time(), threading.Event()

    def beat():
      while not done.wait(self.heartbeat_s):
        self(f"  ... still {msg[0].lower() + msg[1:]} ({time.time() - start:.0f}s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
      yield
    finally:
      done.set()
      thread.join()
    self(f"  done: {msg[0].lower() + msg[1:]} in {time.time() - start:.1f}s")
