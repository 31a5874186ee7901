"""The tutorial notebooks in ``examples/``: every one runs, and each pair is in sync.

Each notebook is a jupytext percent script ``examples/NN_name.py`` (the source of truth) paired
with ``examples/NN_name.ipynb`` (what Jupyter opens and the docs site renders). The tests

* check that both files of a pair hold the same cells (regenerate with
  ``jupytext --sync examples/NN_name.py`` after editing either);
* execute every script with ``SMALL=1`` (the notebooks' smoke-test size, a minute or less each
  on 2 CPU cores) in a fresh Jupyter kernel running this interpreter, with the notebook's
  folder as working directory, and fail on any cell error.

They are part of the default run (CI executes every notebook; about 4 minutes in all on 2 CPU
cores) and carry the ``notebooks`` marker (``pytest -m "not notebooks"`` leaves them out). They
need the ``dev`` extra's ``jupytext``, ``nbclient``, ``nbformat`` and ``ipykernel``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
#: Sample datasets (under TTFS_DATA_DIR / ../shared/data) each notebook reads.
NEEDS_DATA = {"02_cifar10_vgg16": "cifar10_200", "03_neuromorphic_nmnist": "nmnist1k",
              "04_convert_your_model": "mnist9k", "05_ablation": "mnist9k"}
CELL_TIMEOUT_S = 600
KERNEL_NAME = "ttfs-notebook-tests"

pytestmark = pytest.mark.notebooks

jupytext = pytest.importorskip("jupytext", reason="pip install jupytext (the dev extra)")
nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (the dev extra)")


def test_every_notebook_is_found():
    assert len(NOTEBOOKS) >= 5, NOTEBOOKS
    assert (EXAMPLES / "train_digits.py").is_file()


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_in_sync(name):
    script, ipynb = EXAMPLES / f"{name}.py", EXAMPLES / f"{name}.ipynb"
    assert ipynb.is_file(), f"{ipynb.name} is missing: jupytext --to ipynb examples/{name}.py"
    from_script = _cells(jupytext.read(script))
    from_ipynb = _cells(nbformat.read(ipynb, as_version=4))
    hint = f"{name}.py and {name}.ipynb differ: run jupytext --sync examples/{name}.py"
    assert len(from_script) == len(from_ipynb), hint
    for index, (a, b) in enumerate(zip(from_script, from_ipynb)):
        assert a == b, f"{hint} (cell {index})"
    formats = jupytext.read(script).metadata.get("jupytext", {}).get("formats", "")
    assert "ipynb" in formats and "py:percent" in formats, f"{name}.py is not a paired notebook"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec that runs *this* interpreter (not whatever 'python3' a user has)."""
    pytest.importorskip("ipykernel", reason="pip install ipykernel (the dev extra)")
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / KERNEL_NAME)
    return root


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, kernel_dir, monkeypatch, request):
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient (the dev extra)")
    if name in NEEDS_DATA:
        data = request.getfixturevalue("shared_data")  # skips when the sample data is missing
        if not (data / NEEDS_DATA[name]).is_dir():
            pytest.skip(f"{NEEDS_DATA[name]} not found under {data}")
        monkeypatch.setenv("TTFS_DATA_DIR", str(data))
    monkeypatch.setenv("SMALL", "1")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    notebook = jupytext.read(EXAMPLES / f"{name}.py")
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                                     kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{name} failed with SMALL=1:\n{exc}")
    seconds = time.perf_counter() - start
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, json.dumps(errors, indent=1)[:2000]
    print(f"{name}: {seconds:.1f} s with SMALL=1")
