"""minirun: containers and pods from the kernel's own primitives, explained as it goes."""

__version__ = "0.1.0"
