"""The ``ttfs`` commands in the shell blocks of README.md and docs/*.md work as pasted.

The Python blocks run verbatim (tests/test_doc_snippets.py). The training commands would take
minutes to hours and need datasets that are not here, so each runs up to the point where it
would load its data: the command line, the config file it names and every check of the
settings before the data pass, as a reader who pastes it gets them. (A documented ReLU twin
that the settings checks refused went unnoticed until a run.) The ``evaluate``, ``export`` and
``plot`` commands on the digits runs the pages make first (``runs/demo``, ``runs/digits``) run
for real, in order, on a short digits checkpoint.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from test_doc_snippets import FENCE, PAGES, ROOT  # the pages and the fences the snippets use

from ttfs_plugin import cli
from ttfs_plugin.records import DatasetRef

SHELL = {"", "bash", "sh", "shell", "console"}
TRAIN = re.compile(r"ttfs train(\s|$)")  # not an error message, ``ttfs train: error: …``
ON_DIGITS = re.compile(r"ttfs (evaluate|export|plot) runs/(demo|digits)\b")
PLACEHOLDER = re.compile(r"\[|\bNAME\b|\bDIR\b|\bFILE\b|CHECKPOINT|…|\|")  # a synopsis
#: Placeholders a reader fills in, and the value used here.
FILL_IN = {"S": "0"}  # --seed S


def shell_commands(page: Path, command: re.Pattern) -> list[tuple[int, str]]:
    """``(line, command)`` for each line of the page's shell blocks that ``command`` matches
    (continuation lines joined, trailing ``# comments`` dropped, synopses left out)."""
    found, in_shell, fence = [], False, None
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match and fence is None:
            words = match["info"].strip().split()
            fence, in_shell = match["fence"], (words[0].lower() if words else "") in SHELL
        elif match and lines[i].strip().startswith(fence):
            fence = None
        elif fence is not None and in_shell and command.match(lines[i].lstrip("$ ")):
            start, text = i + 1, lines[i].lstrip("$ ")
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].strip()
            text = re.sub(r"\s+#.*$", "", text).strip()
            if not PLACEHOLDER.search(text):
                found.append((start, text))
        i += 1
    return found


#: ``--resume`` commands continue the run of the command before them: not a settings check.
COMMANDS = [(page, line, command) for page in PAGES
            for line, command in shell_commands(page, TRAIN)
            if "--resume" not in command.split()]
#: Per page, its commands on the digits runs, in page order (an export before its evaluate).
ON_DIGITS_RUNS = {page: found for page in PAGES if (found := shell_commands(page, ON_DIGITS))}


class DataReached(Exception):
    """The command got past its settings checks to loading its data."""


def test_the_pages_document_training_commands():
    assert len(COMMANDS) >= 10  # the extraction finds them
    assert any("--config mnist_cnn" in c and "--activation relu" in c for _, _, c in COMMANDS)


@pytest.mark.parametrize("page, line, command", COMMANDS,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in COMMANDS])
def test_a_documented_train_command_is_accepted(page, line, command, tmp_path, monkeypatch,
                                                capsys):
    argv = [FILL_IN.get(word, word) for word in shlex.split(command)[2:]]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(tmp_path / "run")
    else:
        argv += ["--out", str(tmp_path / "run")]

    def reached(self, *args, **kwargs):
        raise DataReached

    monkeypatch.setattr(DatasetRef, "load", reached)
    with pytest.raises(DataReached):
        status = cli.main(["train", *argv])
        pytest.fail(f"{page.name}:{line}: `{command}` stopped with status {status}: "
                    f"{capsys.readouterr().err.strip()}")


def test_the_pages_document_commands_on_the_digits_runs():
    assert sum(len(c) for c in ON_DIGITS_RUNS.values()) >= 8
    assert {c.split()[1] for cs in ON_DIGITS_RUNS.values() for _, c in cs} == {
        "evaluate", "export", "plot"}


@pytest.mark.parametrize("page", list(ON_DIGITS_RUNS), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_pages_commands_on_the_digits_runs_succeed(page, digits_checkpoint, tmp_path,
                                                     monkeypatch, capsys):
    for run in ("runs/demo", "runs/digits"):
        (tmp_path / run).mkdir(parents=True)
        shutil.copy2(digits_checkpoint, tmp_path / run / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for line, command in ON_DIGITS_RUNS[page]:
        status = cli.main(shlex.split(command)[1:])
        assert status == 0, (f"{page.name}:{line}: `{command}` stopped with status {status}: "
                             f"{capsys.readouterr().err.strip()}")
        capsys.readouterr()
