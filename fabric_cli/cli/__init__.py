"""The `fabric` command line: parse, call one library function, render. No ML logic here.

Results go to stdout; progress and logs to stderr. Library errors (FabricError) become one
line on stderr and exit code 1. torch is imported inside commands so `fabric --help` is instant.

- `shell`: what every command shares: the group that turns errors and signals into one line and
  an exit code, the global options, the helpers commands call (run directory, stdin, outputs).
- One module a stage, each registering its commands on `app`: `tokenize` (corpus, tokenize),
  `train` (train, inspect), `probe`, `generate`, `demo`.
"""

from fabric_cli.cli.shell import app, main
from fabric_cli.cli import demo, generate, probe, tokenize, train

STAGES = (tokenize, train, probe, generate, demo)  # imported for what importing does: each registers its commands on app

__all__ = ["app", "main"]
