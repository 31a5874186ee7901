"""What a user gets from ``pip install``: the sdist and wheel are complete, the bundled configs
resolve by name or path, and scikit-learn is needed only by the digits dataset.

The build tests make an sdist of this checkout and a wheel from that sdist (as ``python -m
build`` does: no stale ``build/`` folder can leak into it), with this interpreter's setuptools
and no build isolation: about 3 s, offline. ``scripts/check_sdist.sh`` goes further and runs the
test suite from the unpacked sdist.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ttfs_plugin import configs
from ttfs_plugin.cli import main
from ttfs_plugin.errors import ConfigError, DataError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ttfs_plugin"
PAPER_ROWS = ["cifar100_sm_sr_tr_tb_1e-5", "cifar10_sm", "cifar10_sm_sr", "cifar10_sm_sr_tr",
              "cifar10_sm_sr_tr_tb_1e-4", "cifar10_sm_sr_tr_tb_1e-5"]
#: The top folder's configs, then paper/ and paper-prose/ (tests/test_paper_configs.py).
BUNDLED = ["cifar100_vgg16", "cifar10_vgg16", "mnist_cnn", "nmnist_cnn",
           *(f"{folder}/{row}" for folder in ("paper", "paper-prose") for row in PAPER_ROWS)]


# --- the bundled configs ----------------------------------------------------------------------

def test_list_configs_names_the_bundled_files():
    assert configs.list_configs() == BUNDLED
    assert configs.CONFIG_DIR == PACKAGE / "configs"
    assert not (ROOT / "configs").exists(), "the configs live in ttfs_plugin/configs/ now"


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_config_is_toml_naming_a_dataset_and_model(name):
    """(That every key is a flag of ``ttfs train`` is the CLI's check: tests/test_trainer.py
    trains the CIFAR ones.)"""
    values = tomllib.loads(configs.config_text(name))
    assert values["dataset"] and values["model"]


@pytest.mark.parametrize("spelling", ["cifar10_vgg16", "cifar10_vgg16.toml",
                                      "configs/cifar10_vgg16.toml"])
def test_resolve_config_by_name_or_old_path(spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no such file here: the bundled one
    assert configs.resolve_config(spelling) == PACKAGE / "configs" / "cifar10_vgg16.toml"
    assert "vgg16" in configs.config_text(spelling)


def test_a_real_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    mine = tmp_path / "configs" / "cifar10_vgg16.toml"
    mine.parent.mkdir()
    mine.write_text('epochs = 1\n')
    monkeypatch.chdir(tmp_path)
    old_path = "configs/cifar10_vgg16.toml"
    assert configs.resolve_config(old_path) == Path(old_path)
    assert configs.resolve_config(mine) == mine
    (tmp_path / "mnist_cnn.toml").write_text('epochs = 2\n')
    assert configs.resolve_config("mnist_cnn.toml") == Path("mnist_cnn.toml")


@pytest.mark.parametrize("given, words", [
    ("cifar10", "unknown config 'cifar10'"),
    ("nowhere/c.toml", "does not exist"),
    ("missing.toml", "does not exist"),
    ("configs/missing.toml", "does not exist"),
])
def test_unknown_configs_are_one_line_listing_the_bundled_names(given, words, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        configs.resolve_config(given)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert all(name in message for name in BUNDLED)


def test_a_folder_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        configs.resolve_config(tmp_path)


# --- scikit-learn only for digits -------------------------------------------------------------

def _imported_top_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_digits_loader_imports_sklearn_or_scipy():
    users = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                   if _imported_top_modules(path) & {"sklearn", "scipy"})
    assert users == ["data/digits.py"]


def test_pyproject_puts_scikit_learn_in_the_digits_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith(("scikit-learn", "scipy")) for dep in project["dependencies"])
    extras = project["optional-dependencies"]
    assert extras["digits"] == ["scikit-learn>=1.1"]
    assert "digits" in extras["all"][0] and any("scikit-learn" in d for d in extras["dev"])


def test_digits_without_scikit_learn_is_one_clear_line(monkeypatch, tmp_path, capsys):
    from ttfs_plugin.data import load_digits

    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError) as info:
        load_digits()
    assert "pip install 'ttfs-plugin[digits]'" in str(info.value)
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'ttfs-plugin[digits]'" in err, err


# --- the built sdist and wheel ----------------------------------------------------------------

def _build(kind: str, source: Path, out: Path) -> Path:
    code = (f"import setuptools.build_meta as b; print(b.build_{kind}({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, list[str]]:
    """File lists of an sdist of this checkout and of the wheel built from that sdist."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building needs setuptools >= 77 (pip install -U setuptools)")
    out = tmp_path_factory.mktemp("dist")
    sdist = _build("sdist", ROOT, out)
    with tarfile.open(sdist) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()]
        tar.extractall(out / "unpacked", filter="data")
    wheel = _build("wheel", next((out / "unpacked").iterdir()), out)
    with zipfile.ZipFile(wheel) as zf:
        return {"sdist": names, "wheel": zf.namelist()}


def test_the_sdist_can_run_its_tests_and_build_its_docs(built):
    names = set(built["sdist"])
    for must in ("tests/conftest.py", "tests/_data_helpers.py", "tests/test_packaging.py",
                 "ttfs_plugin/py.typed", "ttfs_plugin/configs/__init__.py", "MANIFEST.in",
                 "ttfs_plugin/ops/ttfs_activation.c",
                 "LICENSE", "CHANGELOG.md", "mkdocs.yml", "requirements-pinned.txt",
                 "docs/installation.md", "examples/01_quickstart.ipynb", "benchmarks/run.py",
                 *(f"ttfs_plugin/configs/{name}.toml" for name in BUNDLED)):
        assert must in names, must
    tracked_tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    assert tracked_tests <= names
    assert not [n for n in names if n.startswith(("site/", "runs/")) or "__pycache__" in n]


def test_the_wheel_is_the_package_with_its_data_and_no_tests(built):
    names = built["wheel"]
    assert "ttfs_plugin/py.typed" in names
    assert "ttfs_plugin/ops/ttfs_activation.c" in names  # compiled at first use
    for name in BUNDLED:
        assert f"ttfs_plugin/configs/{name}.toml" in names
    assert not [n for n in names if not n.startswith(("ttfs_plugin/", "ttfs_plugin-"))]
    assert not [n for n in names if n.startswith("ttfs_plugin/tests") or "__pycache__" in n]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    sources = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= set(names), sorted(sources - set(names))
