"""The optional C extensions (the native core); everything else is in pyproject.toml.

``emu._native`` (emu/_native.c): the machine's dispatch and hook floors.
``probes._native`` (probes/_native.c, which includes probes/_trace.c): the probe hit
paths and the native trace events.

``optional=True``: without a C compiler (or Python's headers) the install goes
on and the pure-Python path is used (``emu.native.AVAILABLE`` is False).
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall"]
_COMMON = ["emu/_native_common.h"]

setup(ext_modules=[Extension("emu._native", ["emu/_native.c"], depends=_COMMON, optional=True,
                             extra_compile_args=_FLAGS),
                   Extension("probes._native", ["probes/_native.c"],
                             depends=[*_COMMON, "probes/_trace.c"], optional=True,
                             extra_compile_args=_FLAGS)])
