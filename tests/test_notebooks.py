"""The Colab notebooks run top to bottom, offline, in the project's venv (nbclient, kernel 'python3')."""

import os
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _execute(name, timeout_s):
  path = os.path.join(REPO, "colab", name)
  nb = nbformat.read(path, as_version=4)
  # Committed without outputs, so that diffs stay readable and nothing stale is shown.
  assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
  # Raises CellExecutionError (with the cell's traceback) on any error.
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout_s, resources={"metadata": {"path": REPO}})
  start = time.time()
  client.execute()
  return nb, time.time() - start


def _text(nb):
  out = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      out.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
  return "\n".join(out)


@pytest.fixture(autouse=True)
def _kernel_env(monkeypatch, tmp_path):
  # The kernel is a plain user session: one CPU device (not the tests' 8 fake ones), this venv's Python.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("FTCAL_WORKDIR", str(tmp_path / "walkthrough"))
  monkeypatch.setenv("FTCAL_CONFIG_ARG", "runlocal")  # 1 epoch of FT: the cells and their outputs, not the numbers.
  monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def test_calibrate_your_own_model_notebook():
  nb, seconds = _execute("calibrate_your_own_model.ipynb", timeout_s=300)
  text = _text(nb)
  assert "AUSUC" in text and "ALG γ" in text
  assert any(
      o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for c in nb.cells
      for o in c.get("outputs", [])), "the curve was not plotted"
  print(f"calibrate_your_own_model.ipynb ran in {seconds:.1f}s")


def test_glyphs_walkthrough_notebook(tmp_path):
  nb, seconds = _execute("glyphs_walkthrough.ipynb", timeout_s=900)
  text = _text(nb)
  for marker in ("NCM, fine-tuned features", "mean p(U|x)", "FT + ALG", "γ* (oracle)", "AUSUC"):
    assert marker in text, marker
  assert os.path.exists(tmp_path / "walkthrough" / "report.json")
  print(f"glyphs_walkthrough.ipynb ran in {seconds:.1f}s")
