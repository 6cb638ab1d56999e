"""Registers mmeb_dllm with mteb right after ``import mteb``, in every interpreter of this environment.

Installed at the site-packages root and imported by ``mmeb_dllm.pth``. It puts a tiny finder at the front of
``sys.meta_path`` that answers only for ``mteb``: it lets the real loader run mteb's ``__init__`` to completion, then
removes itself and calls ``mmeb_dllm.register()`` (or, when one of our own modules imported mteb mid-import, at
mteb's first model/task/benchmark lookup, so registration never imports that module circularly). Costs one string comparison per top-level import until mteb is
imported; never raises (a failed registration is a warning). ``MMEB_DLLM_DISABLE_HOOK=1`` turns it off.
"""

import os
import sys


def _mmeb_dllm_initializing():
    """True while one of our own modules is mid-import (registering then would import it circularly)."""
    for name, module in list(sys.modules.items()):
        if name == "mmeb_dllm" or name.startswith("mmeb_dllm."):
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                return True
    return False


def _register():
    _uninstall()
    try:
        import mmeb_dllm

        mmeb_dllm.register()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must never break mteb
        import warnings

        warnings.warn(
            f"mmeb_dllm could not register with mteb ({type(exc).__name__}: {exc}); mteb works without it. "
            "Set MMEB_DLLM_DISABLE_HOOK=1 to silence this, or run `mmeb-dllm run ...`.",
            stacklevel=2,
        )


_LOOKUPS = ("get_model", "get_model_meta", "get_model_metas", "get_task", "get_tasks", "get_benchmark",
            "get_benchmarks", "evaluate")


def _register_on_first_lookup(mteb_module):
    """mteb was first imported by one of our own modules, mid-import: registering now would import that module
    circularly, so mteb's public lookup functions register first, once, and then step aside."""
    originals = {name: getattr(mteb_module, name) for name in _LOOKUPS if hasattr(mteb_module, name)}

    def wrap(name, function):
        def lookup(*args, **kwargs):
            for other, original in originals.items():
                setattr(mteb_module, other, original)
            _register()
            return function(*args, **kwargs)

        lookup.__wrapped__ = function
        lookup.__doc__ = function.__doc__
        return lookup

    for name, function in originals.items():
        setattr(mteb_module, name, wrap(name, function))


class _MtebImportHook:
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mteb":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec_module = spec.loader.exec_module

        def exec_module(module):
            real_exec_module(module)
            if _mmeb_dllm_initializing():
                _uninstall()
                _register_on_first_lookup(module)
            else:
                _register()

        spec.loader.exec_module = exec_module
        return spec


def _uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _MtebImportHook)]


def install():
    try:
        if os.environ.get("MMEB_DLLM_DISABLE_HOOK") or "mteb" in sys.modules:
            return
        if not any(isinstance(f, _MtebImportHook) for f in sys.meta_path):
            sys.meta_path.insert(0, _MtebImportHook())
    except Exception:  # noqa: BLE001, S110 - never break interpreter start-up
        pass


install()
