"""Sub-commands of the ``xray2mri`` CLI, one module each; every module exposes ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` (taking the parsed args, returning the
exit status). ``xray2mri.pipeline.cli`` discovers the modules here, so adding a command is adding a file.
"""
