"""Help text shared by the sub-commands: every parser's ``--help`` ends with one runnable example.

A sub-command module passes ``epilog=with_example("xray2mri ...")`` and
``formatter_class=ExampleHelpFormatter`` to ``add_parser``: the example keeps its line breaks,
the description is wrapped as usual. ``tests/test_cli.py`` parses every example with the real
parser, so an example that no longer runs fails there.
"""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLE_HEADING", "ExampleHelpFormatter", "with_example"]

#: The line that starts every parser's example.
EXAMPLE_HEADING: str = "Example:"


def with_example(command: str, notes: str = "") -> str:
    """An epilog: ``Example:``, the command indented on its own line, then ``notes`` (kept as written)."""
    text = f"{EXAMPLE_HEADING}\n  {command}"
    return f"{text}\n\n{notes}" if notes else text


class ExampleHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an epilog made by :func:`with_example` keeps its line breaks."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLE_HEADING):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
