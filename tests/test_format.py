"""One formatter and one line width: every tracked Python file is yapf-clean under .style.yapf (120 columns)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE_WIDTH = 120  # Also .style.yapf's column_limit; yapf does not split long comments or strings, so check here.


def _python_files():
  out = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
  files = [f for f in out.split() if os.path.exists(os.path.join(REPO, f))]
  assert len(files) > 20, f"git ls-files found only {files}"
  return files


def test_yapf_clean():
  files = _python_files()
  proc = subprocess.run([sys.executable, "-m", "yapf", "--diff", *files], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, f"Run `yapf -i <file>` (config .style.yapf):\n{proc.stdout[-4000:]}{proc.stderr}"


def test_line_width():
  long = []
  for name in _python_files():
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
      long += [f"{name}:{i}" for i, line in enumerate(f, 1) if len(line.rstrip("\n")) > LINE_WIDTH]
  assert not long, f"Lines over {LINE_WIDTH} columns: {long}"
