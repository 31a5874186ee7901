"""MkDocs build hook (``hooks:`` in mkdocs.yml). Not a page: ``exclude_docs`` skips ``*.py``.

* Publishes every ``examples/NN_name.ipynb`` of the repository as the page
  ``examples/NN_name.ipynb`` of the site (mkdocs-jupyter renders it as stored, without
  executing it), so the notebooks live in ``examples/`` only.
* Lists ``docs/benchmarks.md`` after *Results* in the navigation when that page exists.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def on_config(config):
    nav = config.nav
    if nav and (Path(config.docs_dir) / "benchmarks.md").is_file():
        listed = str(nav)
        if "benchmarks.md" not in listed:
            where = next((i for i, item in enumerate(nav)
                          if isinstance(item, dict) and "Results" in item), len(nav) - 1)
            nav.insert(where + 1, {"Benchmarks": "benchmarks.md"})
    return config


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files, config):
    present = {file.src_uri for file in files}
    for notebook in sorted(EXAMPLES.glob("[0-9][0-9]_*.ipynb")):
        uri = f"examples/{notebook.name}"
        if uri not in present:
            # A real file under the repository root (not File.generated: mkdocs-jupyter's
            # wrapper finds the source through src_dir).
            files.append(File(uri, src_dir=str(ROOT), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files
