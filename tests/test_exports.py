"""The public surface: every package's ``__all__`` is exactly what it exports."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["emu", "probes"])
def test_all_names_exist_and_public_names_are_in_all(package: str) -> None:
    mod = importlib.import_module(package)
    assert len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.{name} is in __all__ but missing"
    public = {n for n in vars(mod) if not n.startswith("_") and not isinstance(getattr(mod, n), type(mod))}
    assert public <= set(mod.__all__), f"{package} exports {public - set(mod.__all__)} outside __all__"


def test_issue_api_names() -> None:
    """The names the issues fix (other code relies on them)."""
    import emu
    import probes

    for name in ("Machine", "GuestFault", "LoadError"):
        assert name in emu.__all__
    for name in ("Kprobe", "Kretprobe", "KretprobeInstance", "ProbeError", "register_kprobe",
                 "unregister_kprobe", "register_kprobes", "unregister_kprobes",
                 "register_kretprobe", "unregister_kretprobe", "register_kretprobes",
                 "unregister_kretprobes", "regs_return_value", "regs_get_kernel_argument",
                 "enable_kprobe", "disable_kprobe", "enable_kretprobe", "disable_kretprobe",
                 "arm_all", "disarm_all", "add_blacklist", "set_optimization", "stack_trace",
                 "list_probes", "KPROBE_FLAG_DISABLED"):
        assert name in probes.__all__, name
    assert probes.KPROBE_FLAG_DISABLED == 2
