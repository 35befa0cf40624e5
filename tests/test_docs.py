"""Every example in the package's docstrings holds: they are documentation a reader will trust."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fabric_cli

MODULES = sorted(m.name for m in pkgutil.walk_packages(fabric_cli.__path__, "fabric_cli.") if m.name != "fabric_cli.__main__")


def test_every_module_is_found():
    assert {"fabric_cli.model", "fabric_cli.generate", "fabric_cli.probe.report", "fabric_cli.corpus"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail"
