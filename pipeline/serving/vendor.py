"""The runtime code an exported bundle carries: ``scripts/``, generated from the installed package.

A bundle shared without this repository must run where only the packages its metadata.json
lists are installed (the model zoo's way: code ships in the bundle's ``scripts/`` folder, on
the path when the bundle runs from its folder). :func:`vendor_scripts` writes that folder at
export time from the installed ``xray2mri`` package, so nothing is kept twice by hand:

* which modules: the import closure of the ``xray2mri.*`` names the configs use (``$import``
  lines, ``_target_`` and expressions), following every ``import`` / ``from ... import`` of
  those modules, function-local ones included, and the packages above them;
* under which name: ``xray2mri.pipeline`` becomes ``scripts.pipeline`` and
  ``xray2mri.transforms`` becomes ``scripts.transforms``, in the copied code and in the
  configs alike (:func:`rewrite_module_names`), so the bundle never imports ``xray2mri``; every
  folder gets an ``__init__.py`` (MONAI's ``$import`` refuses namespace packages);
* what else it needs: :func:`required_packages` maps the third-party modules the closure
  imports to their distributions and installed versions, plus :data:`RUNTIME_EXTRAS` (the
  DICOM decoder plugins pydicom loads by name, and what ``python -m monai.bundle`` itself needs).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "PACKAGE",
    "VENDORED",
    "RUNTIME_EXTRAS",
    "SEPARATE_FIELDS",
    "rewrite_module_names",
    "config_modules",
    "import_closure",
    "required_packages",
    "vendor_scripts",
]

#: The installed distribution whose code is vendored (never listed as a requirement).
PACKAGE: str = "xray2mri"
#: Vendored name of each installed top-level package: ``xray2mri.<key>`` -> ``scripts.<key>``.
VENDORED: dict[str, str] = {"xray2mri.pipeline": "scripts.pipeline", "xray2mri.transforms": "scripts.transforms"}
#: Distributions a running bundle needs that its code does not import by name: pydicom loads the
#: decoder plugins for compressed radiographs (JPEG 2000, JPEG lossless/baseline, JPEG-LS) itself;
#: ``python -m monai.bundle`` needs ``fire``, its ``verify_metadata`` ``jsonschema`` and its
#: ``download_large_files`` ``PyYAML`` (to read ``large_files.yml``); ``torch.utils.tensorboard``
#: (train.json's TensorBoard handlers) needs ``tensorboard``.
RUNTIME_EXTRAS: tuple[str, ...] = (
    "pydicom", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "pyjpegls", "fire", "jsonschema", "PyYAML",
    "tensorboard",
)
#: Distributions metadata.json states in fields of their own (``pytorch_version`` ...), not in
#: ``required_packages_version``.
SEPARATE_FIELDS: dict[str, str] = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}

_NAME = re.compile(r"\b(" + "|".join(re.escape(k) for k in VENDORED) + r")((?:\.\w+)*)")


def rewrite_module_names(text: str) -> str:
    """``text`` with every ``xray2mri.pipeline``/``xray2mri.transforms`` name turned into its ``scripts.`` name."""
    return _NAME.sub(lambda m: VENDORED[m.group(1)] + m.group(2), text)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def config_modules(texts: Iterable[str]) -> set[str]:
    """The ``xray2mri`` modules that config texts name (``a.b.Class`` -> the module ``a.b``)."""
    found = set()
    for text in texts:
        for m in _NAME.finditer(text):
            parts = (m.group(1) + m.group(2)).split(".")
            while len(parts) > 2 and not _is_module(".".join(parts)):
                parts.pop()
            found.add(".".join(parts))
    return found


def _imports(name: str, source: str, is_package: bool) -> set[str]:
    """Absolute names of the modules ``source`` (module ``name``) imports, anywhere in its body."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {n for n in out if n}


def import_closure(modules: Iterable[str]) -> tuple[dict[str, Path | None], set[str]]:
    """Every ``xray2mri`` module ``modules`` need, and the top-level names of the other modules they import.

    Returns:
        ``({module: source file, or None for a folder without __init__.py}, {third-party top-level names})``
        (the standard library is left out).
    """
    own: dict[str, Path | None] = {}
    others: set[str] = set()
    todo = list(modules)
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    while todo:
        name = todo.pop()
        if name in own or not name.startswith(f"{PACKAGE}."):
            continue
        parent = name.rpartition(".")[0]
        if parent != PACKAGE:
            todo.append(parent)  # importing a.b.c runs a/b/__init__.py first
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ModuleNotFoundError(f"{name}: named by the bundle's configs or code but not installed")
        origin = Path(spec.origin) if spec.origin and spec.origin not in ("namespace", "built-in") else None
        own[name] = origin if origin is not None and origin.is_file() else None
        if own[name] is None:
            continue
        for imported in _imports(name, own[name].read_text(), spec.submodule_search_locations is not None):
            top = imported.split(".")[0]
            if top == PACKAGE:
                todo.append(imported)
            elif top not in stdlib:
                others.add(top)
    return own, others


def _installed(dist: str) -> tuple[str, str]:
    """``(name as the distribution spells it, version without a local label)``: ``2.13.0+cpu`` -> ``2.13.0``, what an index serves."""
    meta = importlib.metadata.distribution(dist).metadata
    return meta["Name"], meta["Version"].split("+")[0]


def required_packages(third_party: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Distributions and installed versions for top-level module names, plus :data:`RUNTIME_EXTRAS`.

    Returns:
        ``(required_packages_version, {field: version} for torch / monai / numpy)``.

    Raises:
        ModuleNotFoundError: an imported module belongs to no installed distribution.
    """
    by_module = importlib.metadata.packages_distributions()
    dists = set(RUNTIME_EXTRAS)
    for top in third_party:
        names = by_module.get(top)
        if not names:
            raise ModuleNotFoundError(f"{top}: imported by the bundle's code but no installed distribution provides it")
        dists.add(names[0])
    required, separate = {}, {}
    for dist in sorted(dists, key=str.lower):
        name, version = _installed(dist)
        canonical = name.lower().replace("_", "-")
        if canonical == PACKAGE:
            continue
        if canonical in SEPARATE_FIELDS:
            separate[SEPARATE_FIELDS[canonical]] = version
        else:
            required[name] = version
    for dist, field in SEPARATE_FIELDS.items():
        separate.setdefault(field, _installed(dist)[1])
    return required, separate


def vendor_scripts(config_texts: Mapping[str, str], dest: Path) -> tuple[dict[str, str], list[str]]:
    """Write ``dest`` (a bundle's ``scripts/``) with the import closure of what ``config_texts`` name.

    Args:
        config_texts: ``{file name: JSON text}`` of the bundle's configs.
        dest: the ``scripts`` folder to create.

    Returns:
        ``({file name: rewritten JSON text}, [vendored module names])``; write the texts back
        to the bundle's ``configs/``. Also see :func:`required_packages` for what the code imports.
    """
    own, _ = import_closure(config_modules(config_texts.values()))
    version = importlib.metadata.version(PACKAGE)
    dest.mkdir(parents=True)
    (dest / "__init__.py").write_text(
        f'"""Runtime code of {PACKAGE} {version}, generated by `xray2mri bundle export` from the installed package.\n\n'
        "Configs name it as scripts.pipeline.* and scripts.transforms.*; run the bundle from its folder\n"
        "(or with the folder on PYTHONPATH). Every file is checksummed in configs/metadata.json: do not edit.\n"
        '"""\n'
    )
    for name, source in sorted(own.items(), key=lambda kv: kv[0]):
        vendored = rewrite_module_names(name).split(".")
        if vendored[0] != "scripts":
            continue
        is_package = source is None or source.name == "__init__.py"
        path = dest.joinpath(*vendored[1:], "__init__.py") if is_package else dest.joinpath(*vendored[1:]).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = rewrite_module_names(source.read_text()) if source is not None else f'"""{name} (vendored)."""\n'
        path.write_text(text)
    # every folder a package: MONAI's `$import` refuses namespace packages
    for folder in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text("")
    rewritten = {}
    for fname, text in config_texts.items():
        json.loads(text)  # configs must stay JSON
        rewritten[fname] = rewrite_module_names(text)
    return rewritten, sorted(own)
