"""Run numpy's BLAS single-threaded inside the simulator.

The simulator solves many small batched ridge problems. On a machine whose cores are shared with other jobs,
multi-threaded OpenBLAS spins on every small call and was measured 20-70x slower than one thread (0.1 s vs 7 s
for 60 trials at d = 120 while another process held a core); one thread is as fast as two on an idle
2-core machine for these sizes. ``threadpoolctl`` is used when installed; otherwise the thread-count functions
of the OpenBLAS bundled with numpy are called through ctypes. Anything unexpected makes this a no-op.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
_cache: list = []


def _numpy_openblas():
    if _cache:
        return _cache[0]
    found = None
    try:
        libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
            lib = ctypes.CDLL(path)  # already loaded by numpy: dlopen returns the same handle
            setter = next((getattr(lib, s) for s in _SETTERS if hasattr(lib, s)), None)
            getter = next((getattr(lib, g) for g in _GETTERS if hasattr(lib, g)), None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                found = (getter, setter)
                break
    except OSError:
        found = None
    _cache.append(found)
    return found


@contextlib.contextmanager
def single_thread_blas():
    try:
        from threadpoolctl import threadpool_limits  # type: ignore
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    fns = _numpy_openblas()
    if fns is None:
        yield
        return
    getter, setter = fns
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)
