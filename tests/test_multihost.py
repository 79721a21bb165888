"""Multi-host for real: the main job as 2 processes x 2 CPU devices, one JAX runtime over gloo, on this machine.

Two processes on one machine form a real multi-host JAX runtime: `jax.distributed.initialize` with a coordinator
on 127.0.0.1, `JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo` for the cross-process collectives, and 2 fake CPU devices
per process. The test checks that such a job (1) stops within a bounded time, with JAX's "another task died"
error, when its peer is killed mid-run, (2) resumes when started again, and (3) then gives the report of a
1-process x 4-device run of the same config.

"The same report" means equal exactly, every float included. The job runs with config.exact_reductions, which
all-gathers the devices' gradients and sums them in a fixed order (train_step.py): with the default all-reduce,
gloo sums the 4 devices' gradients in another order than XLA's in-process all-reduce, so the loss after one step
already differs in its last bits (3.8479021 vs 3.8479023 on ViT-testing) and the report's floats drift by up to
~2e-5 (relative) over 40 steps. The model starts from the shipped pre-trained ViT, so that no arg-max is decided
by a last-bit tie.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 24
OVERRIDES = {
    "model.name": "ViT-glyphs/8", "init_checkpoint": "glyphs_vit8_pretrained.npz", "num_steps": STEPS,
    "checkpoint_every_steps": 6, "log_every_steps": 6, "exact_reductions": True
}
HEARTBEAT_S = 5

pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, data_dir, *, process_id=None, port=None):
  cmd = [
      sys.executable, "-m", "ftcal_jax.main", f"--config={REPO}/configs/testing.py", f"--workdir={workdir}",
      f"--config.dataset.data_dir={data_dir}"
  ] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  if process_id is not None:
    cmd += [
        "--jax_distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
        f"--process_id={process_id}", f"--heartbeat_timeout_s={HEARTBEAT_S}", f"--shutdown_timeout_s={HEARTBEAT_S}"
    ]
  return cmd


def _env(devices):
  return {
      **os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
      "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"
  }


def _start_pair(workdir, data_dir, logs):
  port = _free_port()
  procs = []
  for i in range(2):
    log = open(logs / f"p{i}.txt", "w")  # pylint: disable=consider-using-with
    procs.append(
        subprocess.Popen(_command(workdir, data_dir, process_id=i, port=port), cwd=REPO, env=_env(2), stdout=log,
                         stderr=subprocess.STDOUT))
  return procs


def _finish(procs, timeout):
  try:
    return [p.wait(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _mid_run_step(ckpt_dir):
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()] if os.path.isdir(ckpt_dir) else []
  steps = [s for s in steps if 0 < s < STEPS]
  return max(steps) if steps else None


def _assert_same_report(got, want, path=""):
  """Equal structure and equal values, floats to the bit; the first difference is named by its path."""
  if isinstance(want, dict):
    assert sorted(got) == sorted(want), path
    for k in want:
      _assert_same_report(got[k], want[k], f"{path}.{k}")
  elif isinstance(want, list):
    assert len(got) == len(want), path
    for i, (g, w) in enumerate(zip(got, want)):
      _assert_same_report(g, w, f"{path}[{i}]")
  else:  # NaN (history.json's loss before the first step) equals NaN here.
    assert got == want or (got != got and want != want), f"{path}: {got!r} vs {want!r}"


def test_two_processes_survive_a_killed_peer_resume_and_match_one_process(data_dir, tmp_path):
  reference = subprocess.run(_command(tmp_path / "one", data_dir), cwd=REPO, env=_env(4), capture_output=True,
                             text=True, timeout=900)
  assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

  workdir, logs = tmp_path / "two", tmp_path
  procs = _start_pair(workdir, data_dir, logs)
  deadline, killed_at = time.time() + 600, None
  while time.time() < deadline and all(p.poll() is None for p in procs):
    killed_at = _mid_run_step(workdir / "finetune")
    if killed_at:
      os.kill(procs[1].pid, signal.SIGKILL)
      break
    time.sleep(0.05)
  assert killed_at, "the job ended (or hung) before a mid-run checkpoint: " + (logs / "p0.txt").read_text()[-3000:]
  start = time.time()
  rc = _finish(procs, timeout=120)  # Bounded: a few heartbeat timeouts, not JAX's 100 s default, and no hang.
  survivor = (logs / "p0.txt").read_text()
  assert rc[0] != 0 and time.time() - start < 60, survivor[-3000:]
  assert "another task died" in survivor
  assert not (workdir / "report.json").exists()

  procs = _start_pair(workdir, data_dir, logs)  # The same command again resumes.
  assert _finish(procs, timeout=900) == [0, 0], (logs / "p0.txt").read_text()[-3000:]
  assert "finetune: resuming from the checkpoint at step" in (logs / "p0.txt").read_text()
  with open(workdir / "summary.json") as f:
    assert json.load(f)["runs"]["finetune"]["resumed_from"] >= killed_at
  with open(workdir / "report.json") as f:
    two = json.load(f)
  with open(tmp_path / "one" / "report.json") as f:
    one = json.load(f)
  assert two["class_split"] == one["class_split"] and two["test_samples"] == one["test_samples"]
  _assert_same_report(two, one)
  with open(workdir / "finetune" / "history.json") as f, open(tmp_path / "one" / "finetune" / "history.json") as g:
    _assert_same_report(json.load(f), json.load(g))  # The training curve too: every logged loss, to the bit.
