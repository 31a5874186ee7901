"""The paper's training set-ups, shipped with the package as TOML files of ``ttfs train`` flags.

``ttfs train --config cifar10_vgg16`` takes a bundled set-up by name; ``--config my.toml`` takes
a file of your own. :func:`resolve_config` does that look-up; :func:`list_configs` names what is
bundled; :func:`config_text` reads one (e.g. to copy it and edit it)::

    from ttfs_plugin.configs import list_configs, resolve_config
    list_configs()                    # ['cifar100_vgg16', 'cifar10_vgg16', 'mnist_cnn', ...]
    resolve_config("mnist_cnn")       # .../site-packages/ttfs_plugin/configs/mnist_cnn.toml

The paper's ablation (Table 1) and its CIFAR-100 run are bundled twice, in two folders named
with the file: ``paper/NAME`` as the authors' code ran them, ``paper-prose/NAME`` as the
paper's text states them (``resolve_config("paper/cifar10_sm")``; docs/paper_configs.md).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

__all__ = ["CONFIG_DIR", "CONFIG_FOLDERS", "config_text", "list_configs", "resolve_config"]

#: The folder holding the bundled ``*.toml`` files (inside the installed package).
CONFIG_DIR = Path(__file__).resolve().parent

_SUFFIX = ".toml"


#: The sub-folders of bundled configs (their names are ``FOLDER/NAME``).
CONFIG_FOLDERS = ("paper", "paper-prose")


def list_configs() -> list[str]:
    """The names of the bundled configs: the top folder's, sorted (``"cifar10_vgg16"``,
    ``"mnist_cnn"``, ...), then each of :data:`CONFIG_FOLDERS`' (``"paper/cifar10_sm"``, ...)."""
    top = sorted(path.stem for path in CONFIG_DIR.glob(f"*{_SUFFIX}"))
    nested = [f"{folder}/{stem}" for folder in CONFIG_FOLDERS
              for stem in sorted(path.stem for path in (CONFIG_DIR / folder).glob(f"*{_SUFFIX}"))]
    return top + nested


def _bundled(name: str) -> Path | None:
    stem = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name
    return CONFIG_DIR / f"{stem}{_SUFFIX}" if stem in list_configs() else None


def resolve_config(name_or_path: str | Path) -> Path:
    """The TOML file that ``--config name_or_path`` means.

    * an existing file: that file (a file of your own always wins over a bundled name);
    * a bundled name, with or without ``.toml`` (``"cifar10_vgg16"``, ``"paper/cifar10_sm"``),
      that is not a file in the working folder: the bundled file;
    * ``configs/NAME.toml`` that does not exist here: the bundled ``NAME`` (the path these
      configs had in the repository, so older commands keep working from any folder).

    Anything else raises :class:`~ttfs_plugin.errors.ConfigError` on one line that names the
    bundled configs: "unknown config" for a bare name or one in a bundled folder
    (``paper/nothing``), "does not exist" for anything else that looks like a path (it has a
    folder or the ``.toml`` suffix).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config {text!r} is a folder, not a TOML file; "
                          f"bundled configs: {', '.join(list_configs())}")
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    folder = parts[:-1]
    if not path.is_absolute() and folder in ((),) + tuple((f,) for f in CONFIG_FOLDERS):
        bundled = _bundled("/".join(parts))
        if bundled is not None:
            return bundled
        if folder:
            raise ConfigError(f"unknown config {text!r}; give a TOML file or one of the "
                              f"bundled configs: {', '.join(list_configs())}")
    names = ", ".join(list_configs())
    if len(path.parts) > 1 or text.endswith(_SUFFIX):
        raise ConfigError(f"config file {path} does not exist; give a TOML file or one of the "
                          f"bundled configs: {names}")
    raise ConfigError(f"unknown config {text!r}; give a TOML file or one of the bundled "
                      f"configs: {names}")


def config_text(name_or_path: str | Path) -> str:
    """The text of a config (bundled name or file), e.g. to write an edited copy."""
    return resolve_config(name_or_path).read_text(encoding="utf-8")
