"""Fuzz tests (hypothesis): the ELF loader, the syscall layer, probe placement and the
probe-definition language. A small budget runs in ``make test``; ``make fuzz`` runs
only this directory with a large one (see :mod:`tests.fuzz.conftest`)."""
