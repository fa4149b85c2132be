"""The command line: click commands, options, prompts and exit codes. Operations run in ``run/``."""

from capella_deploy.cli.main import main

__all__ = ["main"]
