"""`-t`: a pseudo-terminal for the command, relayed to minirun's own terminal.

The command gets the pty's slave side as stdin/stdout/stderr and controlling terminal (a new session), so
line editing, job control and Ctrl-C work inside it as under `docker run -it`. minirun puts its own terminal
in raw mode, so Ctrl-C arrives as a byte and the pty's line discipline turns it into SIGINT for the
container's foreground process group. Window size follows SIGWINCH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
import threading
import tty

_WINSIZE = struct.Struct("HHHH")


def _copy_window_size(source: int, target: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, _WINSIZE.pack(0, 0, 0, 0))
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


class Pty:
    """One pty pair; the launcher keeps the master, the command gets the slave."""

    def __init__(self, interactive: bool) -> None:
        self.master, self.slave = os.openpty()
        os.set_inheritable(self.master, False)
        self.interactive = interactive
        self._saved_mode: list | None = None
        self._output: threading.Thread | None = None
        if os.isatty(0):
            _copy_window_size(0, self.slave)

    @property
    def child_stdio(self) -> tuple[int, int, int]:
        return (self.slave, self.slave, self.slave)

    def start(self) -> None:
        """Call in the launcher after the fork: relay in both directions until the command's side closes."""
        os.close(self.slave)  # only the command holds the slave now, so its exit shows as EIO on the master
        if self.interactive and os.isatty(0):
            self._saved_mode = termios.tcgetattr(0)
            tty.setraw(0)
        self._output = threading.Thread(target=self._pump, args=(self.master, 1), daemon=True)
        self._output.start()
        if self.interactive:
            threading.Thread(target=self._pump, args=(0, self.master), daemon=True).start()

    def resize(self) -> None:
        if os.isatty(0):
            _copy_window_size(0, self.master)

    def finish(self) -> None:
        """After the command exited: drain what it printed last, then give the terminal back."""
        if self._output is not None:
            self._output.join(timeout=2)
        if self._saved_mode is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved_mode)
        with contextlib.suppress(OSError):
            os.close(self.master)

    @staticmethod
    def _pump(source: int, target: int) -> None:
        while True:
            try:
                data = os.read(source, 65536)
            except OSError:  # EIO: every holder of the slave side is gone
                return
            if not data:
                return
            try:
                _write_all(target, data)
            except OSError:
                return
