"""``python -m kprobe_emu``: the same as the ``kprobe-emu`` command."""

import sys

from kprobe_emu.cli import main

sys.exit(main())
