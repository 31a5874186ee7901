"""Griffe extension for the API reference (``extensions:`` of mkdocstrings in mkdocs.yml).

The library's docstrings are written for ``help()`` and Sphinx: ``>>>`` examples and roles
such as ``:func:`~ttfs_plugin.kernel.encode```. Markdown would read ``>>>`` as nested
quotes and print the roles verbatim, so before rendering this turns

* every run of ``>>>`` / ``...`` lines (with the output lines after them) into a ``pycon``
  code block;
* every ``:role:`target``` into inline code (``~`` keeps the last dotted part, as in Sphinx).

It changes only what the documentation shows, never the code.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):"
                  r"`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    target = match.group(2).strip()
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def convert(text: str) -> str:
    """The docstring ``text`` with doctest blocks fenced and Sphinx roles as inline code."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(">>>"):
            out.append(ROLE.sub(_role, lines[i]))
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(stripped)]
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent):])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{indent}```pycon", *(f"{indent}{line}" for line in block), f"{indent}```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class DocstringsForMarkdown(griffe.Extension):
    """Rewrite each docstring once the package is loaded (see the module docstring)."""

    def on_object(self, *, obj, **kwargs) -> None:
        if isinstance(obj, griffe.Alias) or obj.docstring is None:
            return
        obj.docstring.value = convert(obj.docstring.value)
