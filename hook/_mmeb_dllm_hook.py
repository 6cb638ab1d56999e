"""Registers mmeb_dllm with mteb right after ``import mteb``, in every interpreter of this environment.

Installed at the site-packages root and imported by ``mmeb_dllm.pth``. It puts a tiny finder at the front of
``sys.meta_path`` that answers only for ``mteb``: it lets the real loader run mteb's ``__init__`` to completion, then
removes itself and calls ``mmeb_dllm.register()``. Costs one string comparison per top-level import until mteb is
imported; never raises (a failed registration is a warning). ``MMEB_DLLM_DISABLE_HOOK=1`` turns it off.
"""

import os
import sys


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
