r"""Command line: `python -m ftcal_jax.main --config configs/glyphs.py --workdir DIR`.

Config fields can be overridden on the command line, e.g. `--config.seed=1`. On a multi-host pod add
`--jax_distributed` so every host joins one JAX runtime before the mesh is built.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter.

_T0 = time.time()
# The first line comes before the heavy imports (JAX, TensorFlow Datasets), so a user sees the job start at once.
print("[   0.0s] ftcal_jax: starting (importing JAX and TensorFlow Datasets)", flush=True)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file, e.g. configs/glyphs.py[:runlocal].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory; rerunning with the same config resumes there.")
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize() first (multi-host pods).")
# Only for clusters JAX cannot detect by itself (TPU pods, SLURM, Open MPI and Kubernetes need none of these).
flags.DEFINE_string("coordinator_address", None, "With --jax_distributed: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "With --jax_distributed: the number of processes (hosts).")
flags.DEFINE_integer("process_id", None, "With --jax_distributed: this process's index in [0, num_processes).")
# When a host dies, the others notice through missed heartbeats; JAX's defaults (100 s, 300 s at shutdown) are for
# pods. A 2-process rehearsal on one machine can use a few seconds (docs/pods.md).
flags.DEFINE_integer(
    "heartbeat_timeout_s", 100,
    "With --jax_distributed: a process silent this long is declared dead; the job stops with an error.")
flags.DEFINE_integer("shutdown_timeout_s", 300, "With --jax_distributed: how long a finished process waits for the "
                     "others at shutdown.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # absl defaults to INFO under app.run, and orbax logs every save at INFO: keep stdout to the progress lines.
  if not any(a.startswith(("--verbosity", "--v=", "-v")) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.jax_distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_s,
                               shutdown_timeout_seconds=FLAGS.shutdown_timeout_s)
  from ftcal_jax import train  # pylint: disable=g-import-not-at-top
  print(f"[{time.time() - _T0:6.1f}s] ftcal_jax: imports done", flush=True)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir, start_time=_T0)


if __name__ == "__main__":
  sys.exit(app.run(main))
