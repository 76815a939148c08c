"""A stand-in package: any attribute, any submodule, is a placeholder (see README.md)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any


class _Missing(Exception):
    """A placeholder class: importable, usable in ``except`` and ``isinstance``; calling
    it (or any class method of it) says which package is missing."""

    package = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ModuleNotFoundError(f"{self.package} is not installed on this machine")


class _Module(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        placeholder = type(name, (_Missing,), {"package": self.__name__.split(".")[0]})
        setattr(self, name, placeholder)
        return placeholder


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, top: str) -> None:
        self.top = top

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.startswith(self.top + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Module(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install(top: str) -> None:
    """Make ``top`` (already imported: its ``__init__`` calls this) a stand-in."""
    module = sys.modules[top]
    module.__class__ = _Module
    sys.meta_path.append(_Finder(top))
