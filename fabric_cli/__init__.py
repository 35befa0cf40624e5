"""Neural Fabric: a small GPT's whole life from one command line.

The library is usable without the CLI::

    from fabric_cli.config import PRESETS
    from fabric_cli.model import GPT
    model = GPT(PRESETS["tiny"])
"""

__version__ = "0.1.0"
