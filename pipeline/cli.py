"""The ``xray2mri`` command: what bundles do not cover (synthetic data, manifests, predict, report, demo).

Each sub-command lives in its own module under ``xray2mri.pipeline.commands`` and is discovered here;
the Python API stays in the library modules and this layer only parses arguments.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from xray2mri.pipeline import commands
from xray2mri.pipeline.version import package_version


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="xray2mri", description="One knee radiograph in, one 3-D MRI volume out (MONAI)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # helpers of the commands, not commands
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
