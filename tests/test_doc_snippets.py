"""Every ```python block of README.md and docs/*.md runs verbatim.

One test per page: the page's blocks run in order in one namespace, in a fresh working
directory that holds what the pages assume exists (the digits checkpoint of ``make demo`` at
``runs/demo/`` and ``runs/digits/``, ``net.nir`` exported from it, ``../shared/data`` pointing at
the sample data, ``TTFS_DATA_DIR`` set). A failure names the page, the block and its line, and
the traceback shows the page's own lines.

A block the reader should see but the test cannot run (it downloads, or trains for hours) has
``<!-- not run: REASON -->`` on the line before its fence; keep those rare. Blocks with ``>>>``
prompts are doctest transcripts, not Python blocks, and are left alone. The network is closed
while the blocks run, so a block that would download fails at once instead of hanging.
"""

from __future__ import annotations

import re
import shutil
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    index: int  # 1-based among the page's python blocks
    line: int  # 1-based line of the first code line in the page
    source: str
    not_run: str | None  # the reason, when the block is marked not to run

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)} block {self.index} (line {self.line})"


def python_blocks(page: Path) -> list[Block]:
    """The page's fenced blocks whose info string starts with ``python`` (``>>>`` ones left out)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        words = opening["info"].strip().lstrip("{").split()
        language = words[0].lstrip(".").lower() if words else ""
        start = i + 1
        j = start
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (closing and closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence)
                    and not closing["info"].strip()):
                break
            j += 1
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[start:j]]
        if language in ("python", "py") and not any(b.lstrip().startswith(">>>") for b in body):
            before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            marker = NOT_RUN.match(before)
            blocks.append(Block(page, len(blocks) + 1, start + 1, "\n".join(body) + "\n",
                                marker["reason"] if marker else None))
        i = j + 1
    return blocks


BLOCKS = {page.name if page.parent == ROOT else f"docs/{page.name}": python_blocks(page)
          for page in PAGES}
PAGES_WITH_CODE = [name for name, blocks in BLOCKS.items() if blocks]


def test_the_pages_are_found():
    assert "README.md" in PAGES_WITH_CODE and "docs/quickstart.md" in PAGES_WITH_CODE
    assert sum(len(b) for b in BLOCKS.values()) >= 15


def test_every_not_run_marker_gives_a_reason_and_precedes_a_python_block():
    """A stray or empty marker is a mistake: it would silently stop a block from running."""
    marked = {(b.page, b.line) for blocks in BLOCKS.values() for b in blocks if b.not_run}
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            marker = NOT_RUN.match(line)
            if not marker:
                continue
            assert marker["reason"], f"{page.name}:{number}: say why the block is not run"
            fence = next(k for k in range(number, len(lines)) if lines[k].strip())
            assert (page, fence + 2) in marked, \
                f"{page.name}:{number}: a not-run marker must be right before a ```python block"


# --- what the pages assume exists ------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory, digits_checkpoint) -> Path:
    """``runs/demo`` and ``runs/digits`` (a 2-epoch digits MLP, as ``make demo`` leaves it but
    shorter) and ``net.nir`` exported from it (docs/nir.md's shell lines)."""
    from ttfs_plugin.cli import main

    base = tmp_path_factory.mktemp("doc_snippets_base")
    for run in ("runs/demo", "runs/digits"):
        (base / run).mkdir(parents=True)
        shutil.copy2(digits_checkpoint, base / run / "checkpoint.pt")
    assert main(["export", str(base / "runs/digits/checkpoint.pt"), "--backend", "nir",
                 "--out", str(base / "net.nir")]) == 0
    return base


@pytest.fixture
def workdir(tmp_path, prepared, shared_data, monkeypatch) -> Path:
    """A fresh copy of ``prepared`` as the working directory, ``../shared/data`` beside it."""
    work = tmp_path / "project"
    shutil.copytree(prepared, work)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data, target_is_directory=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("TTFS_DATA_DIR", str(shared_data))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return work


@pytest.fixture
def one_thread():
    """One torch thread: the pages' small networks gain nothing from more, and on a busy
    machine PyTorch's waiting worker threads would spin, several times the CPU time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Internet sockets refuse to connect (and names do not resolve) while the blocks run."""
    def refuse(*args, **kwargs):
        raise OSError("documentation snippets must not use the network: run the block on the "
                      "built-in digits or the sample data, or mark it <!-- not run: reason -->")

    connect = socket.socket.connect

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_the_python_blocks_of_the_page_run(page, workdir, no_network, one_thread):
    namespace: dict = {"__name__": "__doc_snippet__"}
    ran = 0
    for block in BLOCKS[page]:
        if block.not_run:
            continue
        # Blank lines in front give the traceback the page's own line numbers and lines.
        code = compile("\n" * (block.line - 1) + block.source, str(block.page), "exec")
        try:
            exec(code, namespace)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: report any failure with its block
            details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            pytest.fail(f"{block.name} failed: {type(exc).__name__}: {exc}\n\n"
                        f"{block.source}\n{details}", pytrace=False)
        finally:
            _close_figures()
        ran += 1
    assert ran, f"{page}: every python block is marked not run"


def _close_figures() -> None:
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def test_what_counts_as_a_python_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "```python", "a = 1", "```",
        "<!-- not run: downloads CIFAR-10 -->", "", "```python", "download()", "```",
        "```python", ">>> 1 + 1", "2", "```",
        "```bash", "ttfs train", "```",
        "- a list item:", "", "    ```python", "    b = a + 1", "    ```",
        "~~~~python", "```python", "~~~~",
    ]) + "\n")
    blocks = python_blocks(page)
    assert [(b.line, b.source, b.not_run) for b in blocks] == [
        (2, "a = 1\n", None), (7, "download()\n", "downloads CIFAR-10"),
        (19, "b = a + 1\n", None), (22, "```python\n", None)]
