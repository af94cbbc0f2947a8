"""The optional C extension (emu._native); everything else is in pyproject.toml.

``optional=True``: without a C compiler (or Python's headers) the install goes
on and the pure-Python path is used (``emu.native.AVAILABLE`` is False).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("emu._native", ["emu/_native.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall"])])
