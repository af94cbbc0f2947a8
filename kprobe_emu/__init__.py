"""The ``kprobe-emu`` command line and its tools."""
