"""``ioctl``: the requests every file takes, and a terminal's.

Generic requests (``fs/ioctl.c``, ``do_vfs_ioctl``): ``FIOCLEX``/``FIONCLEX``
(the descriptor's close-on-exec flag), ``FIONBIO`` (the file's ``O_NONBLOCK``),
``FIOASYNC`` (accepted), ``FIONREAD`` (a regular file: bytes from the position
to the end; a pipe or the standard input: bytes a read would return now).

Only a standard stream that is the host's terminal is a terminal
(:meth:`._files.InputFile.terminal`); on anything else a terminal request is
``ENOTTY``, which is how ``isatty`` tells. A terminal answers as a fresh
pseudo-terminal does (``drivers/tty/tty_ioctl.c``, ``tty_io.c``): ``TCGETS``
gives the default ``termios`` of ``tty_std_termios`` (``stty sane``), the
window size is the host terminal's, the foreground process group is the
process. Settings (``TCSETS*``, ``TIOCSWINSZ``, ...) are accepted and change
nothing: the guest never reconfigures the host's terminal.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from ._files import InputFile, OpenFile, OutputFile
from ._kernel import Kernel
from ._registry import KernelError

__all__ = ["ioctl"]

# include/uapi/asm-generic/ioctls.h
TCGETS, TCSETS, TCSETSW, TCSETSF = 0x5401, 0x5402, 0x5403, 0x5404
TCSBRK, TCXONC, TCFLSH = 0x5409, 0x540A, 0x540B
TIOCGPGRP, TIOCSPGRP, TIOCGWINSZ, TIOCSWINSZ = 0x540F, 0x5410, 0x5413, 0x5414
FIONREAD, FIONBIO, TIOCGSID = 0x541B, 0x5421, 0x5429
FIONCLEX, FIOCLEX, FIOASYNC = 0x5450, 0x5451, 0x5452
O_NONBLOCK = 0o4000
SEEK_CUR = 1

# struct termios (kernel, NCCS 19): iflag oflag cflag lflag line cc[19]
TERMIOS = struct.Struct("<IIIIB19s")
WINSIZE = struct.Struct("<HHHH")         # ws_row ws_col ws_xpixel ws_ypixel
# tty_std_termios (drivers/tty/tty_io.c) as a pty's slave sees it after `stty sane`:
# ICRNL|IXON|IUTF8, OPOST|ONLCR, B38400|CS8|CREAD, ISIG|ICANON|ECHO|ECHOE|ECHOK|
# ECHOCTL|ECHOKE|IEXTEN; INIT_C_CC (^C ^\ ^? ^U ^D, VMIN 1, ^Q ^S ^Z, ^R ^O ^W ^V).
_CC = bytes([3, 0x1C, 0x7F, 0x15, 4, 0, 1, 0, 0x11, 0x13, 0x1A, 0, 0x12, 0x0F, 0x17, 0x16, 0])
DEFAULT_TERMIOS = TERMIOS.pack(0x4500, 0x5, 0xBF, 0x8A3B, 0, _CC)
DEFAULT_WINSIZE = (24, 80)
_INT = struct.Struct("<i")
_TTY_ACCEPTED = {TCSETS, TCSETSW, TCSETSF, TCSBRK, TCXONC, TCFLSH, TIOCSPGRP, TIOCSWINSZ}


def ioctl(k: Kernel, fd: int, f: OpenFile, request: int, arg: int) -> int:
    """One ``ioctl`` on descriptor ``fd`` (open on ``f``); ``request`` as 32 bits."""
    if request in (FIOCLEX, FIONCLEX):
        k.files.set_cloexec(fd, request == FIOCLEX)
        return 0
    if request == FIONBIO:
        on = _INT.unpack(k.read(arg, _INT.size))[0]
        f.status_flags = f.status_flags | O_NONBLOCK if on else f.status_flags & ~O_NONBLOCK
        return 0
    if request == FIOASYNC:
        k.read(arg, _INT.size)
        return 0
    terminal = f.terminal() if isinstance(f, InputFile | OutputFile) else None
    if request == FIONREAD:
        k.write(arg, _INT.pack(_fionread(f, terminal)))
        return 0
    if terminal is None:
        raise KernelError(errno.ENOTTY)
    return _tty_ioctl(k, terminal, request, arg)


def _fionread(f: OpenFile, terminal: int | None) -> int:
    if isinstance(f, InputFile) and terminal is None:
        return f.available()
    pipe = getattr(f, "pipe", None)             # an end of an emulated pipe (._pipe)
    if pipe is not None:
        return len(pipe.buf)
    st = f.host_stat()
    if st is None or terminal is not None:
        return 0                                # a pipe written to the host; a terminal
    if stat.S_ISREG(st.st_mode):
        return max(0, min(st.st_size - f.lseek(0, SEEK_CUR), 0x7FFF_FFFF))
    raise KernelError(errno.ENOTTY)


def _tty_ioctl(k: Kernel, terminal: int, request: int, arg: int) -> int:
    if request == TCGETS:
        k.write(arg, DEFAULT_TERMIOS)
    elif request == TIOCGWINSZ:
        try:
            cols, rows = os.get_terminal_size(terminal)
        except OSError:
            rows, cols = DEFAULT_WINSIZE
        k.write(arg, WINSIZE.pack(rows or DEFAULT_WINSIZE[0], cols or DEFAULT_WINSIZE[1], 0, 0))
    elif request in (TIOCGPGRP, TIOCGSID):
        k.write(arg, _INT.pack(k.pid))
    elif request in _TTY_ACCEPTED:
        if request in (TCSETS, TCSETSW, TCSETSF):
            k.read(arg, TERMIOS.size)
    else:
        raise KernelError(errno.ENOTTY)
    return 0
