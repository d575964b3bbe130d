"""The thin syscall layer: the only place that talks to libc through ctypes."""
