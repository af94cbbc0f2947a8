"""An x86-64 emulator on Unicorn: assembled functions, ELF programs, memory, symbols, tasks,
seed sweeps.

``emu`` never imports ``probes``; it tells its clients "the guest hit int3 at X"
(``Machine.traps``) and "the guest reached X" (``Machine.hook_code``).
"""

from ._errors import AsmError, EmuError, GuestFault, LoadError, SymbolNotFound
from ._machine import DEFAULT_MAX_INSNS, Machine
from ._memory import PAGE, Region
from ._objects import FileMapping, MappedObject, ObjectTable
from ._sweep import Outcome, SweepResult, sweep
from ._symbols import Symbol, SymbolTable
from ._task import Task

__all__ = [
    "AsmError", "DEFAULT_MAX_INSNS", "EmuError", "FileMapping", "GuestFault", "LoadError",
    "Machine", "MappedObject", "ObjectTable", "Outcome", "PAGE", "Region", "SweepResult", "Symbol",
    "SymbolNotFound", "SymbolTable", "Task", "sweep",
]
