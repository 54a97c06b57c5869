"""The ``xray2mri`` command itself: ``--version``, and one runnable example in every sub-command's help."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import subprocess
import sys
from importlib import metadata

import pytest

from xray2mri.pipeline import cli
from xray2mri.pipeline.commands._help import EXAMPLE_HEADING
from xray2mri.pipeline.version import package_version


def _sub_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(words, parser) of every sub-command, nested ones too (``manifest build``), as argparse discovers them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _sub_commands(sub, (*path, name))


SUB_COMMANDS = dict(_sub_commands(cli.build_parser()))


def test_version_is_the_installed_distribution(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"xray2mri {metadata.version('xray2mri')}"
    assert package_version() == metadata.version("xray2mri")


def test_help_and_synth_start_without_torch_or_monai(tmp_path):
    """The parser, and the commands that run no network (``synth``), do not pay torch's and MONAI's import
    (~9 s on the 2-core machine): ``xray2mri --help`` answers at once."""
    code = (
        "import json, sys\n"
        "from xray2mri.pipeline import cli\n"
        "cli.build_parser()\n"
        "after_parser = sorted(m for m in ('torch', 'monai', 'ignite') if m in sys.modules)\n"
        f"status = cli.main(['synth', '--out', {str(tmp_path / 'cohort')!r}, '--subjects', '1', '--workers', '1', "
        "'--no-progress'])\n"
        "print(json.dumps([after_parser, sorted(m for m in ('torch', 'monai', 'ignite') if m in sys.modules), status]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after_parser, after_synth, status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (after_parser, after_synth, status) == ([], [], 0)
    assert (tmp_path / "cohort" / "datalist.json").is_file()


def test_the_transforms_package_exports_resolve_to_their_modules():
    """``xray2mri.transforms`` imports its names on first use; each one is its module's own object."""
    import xray2mri.transforms as transforms

    for name in transforms.__all__:
        module = importlib.import_module(f"xray2mri.transforms.{transforms._EXPORTS[name]}")
        assert getattr(transforms, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="no attribute 'LoadNothing'"):
        transforms.LoadNothing  # noqa: B018


def test_the_commands_are_discovered():
    assert {"bundle", "demo", "manifest", "predict", "report", "synth"} <= {words[0] for words in SUB_COMMANDS}
    assert ("manifest", "build") in SUB_COMMANDS


@pytest.mark.parametrize("words", sorted(SUB_COMMANDS), ids=" ".join)
def test_every_help_ends_with_a_runnable_example(words, capsys):
    """``xray2mri WORDS --help`` shows an Example line, and that example parses as the same sub-command."""
    with pytest.raises(SystemExit):
        cli.main([*words, "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert EXAMPLE_HEADING in [line.strip() for line in lines], f"xray2mri {' '.join(words)} --help has no example"
    example = lines[[line.strip() for line in lines].index(EXAMPLE_HEADING) + 1].strip()
    argv = shlex.split(example, comments=True)
    assert argv[0] == "xray2mri" and tuple(argv[1 : 1 + len(words)]) == words, example
    args = cli.build_parser().parse_args(argv[1:])  # exits (SystemExit) if the example does not parse
    assert callable(args.func)


def test_override_values_are_read_as_json_in_every_command_that_runs_bundle_configs():
    """``--override tissue_weight 1.0`` is the number 1.0 (a string "1.0" broke the demo's calibrate step, whose
    config compares it with 0), ``false`` is False, and a word stays a word."""
    from xray2mri.pipeline.commands._overrides import parse_overrides

    assert parse_overrides([("tissue_weight", "1.0"), ("uncertainty", "false"), ("variant", "bottleneck"),
                            ("mri_shape", "[64, 64, 64]"), ("init_from", "null")]) == {
        "tissue_weight": 1.0, "uncertainty": False, "variant": "bottleneck", "mri_shape": [64, 64, 64],
        "init_from": None}
