"""minirun's default seccomp filter: what Docker's default profile refuses, refused the same way, built
with libseccomp (Debian's libseccomp.so.2) through ctypes.

Policy. Docker's profile (moby `profiles/seccomp/default.json`) is an allowlist: about 370 syscalls are
allowed, some only with arguments or capabilities, everything else fails with EPERM. minirun builds the
same refusals as a denylist instead: the default action is ALLOW, and every syscall Docker does not allow
gets an explicit EPERM rule. The list below was derived by taking every syscall libseccomp 2.5.4 knows on
x86_64, x86 and x32 and removing Docker's allowlist; the capability-gated groups are Docker's own, and
are relaxed, as in Docker, when the container keeps that capability. Why a denylist:

- An allowlist can only name syscalls libseccomp knows, so with Debian 12's libseccomp on a newer kernel
  every newer syscall (statmount, listmount, mseal, lsm_*, uretprobe, ...) would fail with EPERM. libc
  only falls back to an older syscall on ENOSYS, and the kernel's own uretprobe trampoline breaks. runc
  avoids that with a hand-written BPF prologue answering ENOSYS past the profile's newest syscall, which
  libseccomp cannot express. Syscalls newer than Docker's list are therefore allowed here (Docker answers
  ENOSYS): cachestat, fchmodat2, futex_wait/wake/requeue, map_shadow_stack and anything libseccomp does
  not know. None of them reaches past what the container's capabilities and namespaces already allow.
- 135 rules per ABI (33 of them for personality) instead of ~370: building takes ~1 ms, loading ~1 ms.

Argument rules, as Docker: clone with any CLONE_NEW* flag, socket(AF_VSOCK), and personality other than
the handful of personas Docker allows are refused; clone3 fails with ENOSYS (its flags live in memory,
out of a filter's reach) so that libc falls back to clone. ptrace and process_vm_readv/writev are
allowed, as Docker allows them on kernels >= 4.8 (where ptrace can no longer bypass seccomp).
The 32-bit x86 and x32 ABIs get the same rules (a 32-bit syscall must not bypass a 64-bit rule);
a syscall an ABI does not have is skipped there.

seccomp(2): https://man7.org/linux/man-pages/man2/seccomp.2.html; Docker's default profile:
https://docs.docker.com/engine/security/seccomp/
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

# Refused whatever the capabilities (Docker never allows them).
ALWAYS_REFUSED: tuple[str, ...] = (
    # replace the running kernel, or page it out
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    # the kernel keyring is not namespaced: keys would be shared with the host
    "add_key",
    "keyctl",
    "request_key",
    # a classic kernel-exploit primitive (stalls the kernel on a page fault)
    "userfaultfd",
    # io_uring: a large kernel attack surface that bypasses per-syscall filtering; Docker >= 25 and
    # containerd refuse it by default (moby#46762)
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # Docker does not allow pivot_root even with CAP_SYS_ADMIN
    "pivot_root",
    # move another process's pages between NUMA nodes
    "migrate_pages",
    "move_pages",
    # obsolete: host-global or long gone from the kernel
    "_sysctl",
    "bdflush",
    "create_module",
    "get_kernel_syms",
    "nfsservctl",
    "query_module",
    "sysfs",
    "uselib",
    "ustat",
    # 32-bit x86 only: virtual 8086 mode and old calls libc no longer makes
    "vm86",
    "vm86old",
    "nice",
    "oldfstat",
    "oldlstat",
    "oldolduname",
    "oldstat",
    "olduname",
    "readdir",
    "sgetmask",
    "ssetmask",
    "sigaction",
    "signal",
    "sigpending",
    "sigsuspend",
    # never implemented
    "afs_syscall",
    "break",
    "ftime",
    "getpmsg",
    "gtty",
    "idle",
    "lock",
    "mpx",
    "prof",
    "profil",
    "putpmsg",
    "security",
    "stty",
    "tuxcall",
    "ulimit",
    "vserver",
)

# Refused unless the container keeps one of the capabilities (Docker's conditional groups).
CAPABILITY_GATED: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (
        frozenset({"CAP_SYS_ADMIN"}),
        (
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "unshare",
            "setns",
            "sethostname",
            "setdomainname",
            "quotactl",
            "quotactl_fd",
            "fanotify_init",
            "lookup_dcookie",
        ),
    ),
    (frozenset({"CAP_SYS_ADMIN", "CAP_BPF"}), ("bpf",)),
    (frozenset({"CAP_SYS_ADMIN", "CAP_PERFMON"}), ("perf_event_open",)),
    (frozenset({"CAP_SYS_ADMIN", "CAP_SYSLOG"}), ("syslog",)),
    (frozenset({"CAP_DAC_READ_SEARCH"}), ("open_by_handle_at",)),
    (frozenset({"CAP_SYS_BOOT"}), ("reboot",)),
    (frozenset({"CAP_SYS_CHROOT"}), ("chroot",)),
    (frozenset({"CAP_SYS_MODULE"}), ("init_module", "finit_module", "delete_module")),
    (frozenset({"CAP_SYS_PACCT"}), ("acct",)),
    (frozenset({"CAP_SYS_PTRACE"}), ("kcmp", "pidfd_getfd", "process_madvise")),
    (frozenset({"CAP_SYS_RAWIO"}), ("iopl", "ioperm")),
    (frozenset({"CAP_SYS_TIME"}), ("settimeofday", "stime", "clock_settime", "clock_settime64")),
    (frozenset({"CAP_SYS_TTY_CONFIG"}), ("vhangup",)),
    (frozenset({"CAP_SYS_NICE"}), ("get_mempolicy", "set_mempolicy", "mbind", "set_mempolicy_home_node")),
)
# Before 4.8 a tracer could rewrite a syscall after seccomp had checked it.
PTRACE_GROUP = ("ptrace", "process_vm_readv", "process_vm_writev")

# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: Docker's 0x7E020000 mask, one rule per bit.
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
AF_VSOCK = 40
PER_LINUX32 = 0x0008
UNAME26 = 0x0020000
PERSONALITY_QUERY = 0xFFFFFFFF

# libseccomp's constants (seccomp.h).
_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_ATTR_CTL_NNP = 3
_ATTR_CTL_OPTIMIZE = 8
CMP_EQ = 4
CMP_GT = 6
CMP_MASKED_EQ = 7
_ARCH_TOKENS = {"x86_64": 0xC000003E, "x86": 0x40000003, "x32": 0x4000003E, "aarch64": 0xC00000B7, "arm": 0x40000028}
# Docker's sub-architectures: the compat ABIs a 64-bit kernel also accepts.
_SUB_ABIS = {"x86_64": ("x86", "x32"), "aarch64": ("arm",)}
# On 32-bit x86, libseccomp turns an argument rule on socket() into one on socketcall(SYS_SOCKET), which
# cannot see the family and would refuse every socket; Docker's rule is bypassable there through
# socketcall anyway, so it only applies where socket() is a syscall of its own.
_DIRECT_SOCKET_ABIS = frozenset({"x86_64", "x32", "aarch64", "arm"})


class Cmp(NamedTuple):
    """One argument comparison (libseccomp's struct scmp_arg_cmp): `args[arg] <op> a`, or
    `args[arg] & a == b` for CMP_MASKED_EQ."""

    arg: int
    op: int
    a: int
    b: int = 0


class Rule(NamedTuple):
    syscall: str
    errno: int = errno.EPERM
    args: tuple[Cmp, ...] = ()  # all must hold; at most one per argument (a libseccomp limit)
    abis: frozenset[str] | None = None  # None: every ABI the filter covers


def personality_refusals() -> list[tuple[Cmp, ...]]:
    """Comparisons on personality's argument, one rule each, that together match exactly the values Docker
    refuses: all but 0, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26 and 0xffffffff (the query).

    libseccomp allows one comparison per argument in a rule, so "none of these five" is covered with masked
    comparisons. A refused value below 2**32 has a bit outside PER_LINUX32|UNAME26 set and, not being the
    query, some clear bit; walking up (cyclically) from that set bit to the first clear one ends on a set
    bit j followed by a clear bit, and j-1 is set too when j is one of the two allowed bits. Each such
    pattern is one rule, and none matches an allowed value.
    """
    allowed_bits = PER_LINUX32 | UNAME26
    rules = [(Cmp(0, CMP_GT, PERSONALITY_QUERY),)]
    for j in range(32):
        bit, after = 1 << j, 1 << (j + 1) % 32
        if bit & allowed_bits:
            before = 1 << (j - 1)
            rules.append((Cmp(0, CMP_MASKED_EQ, before | bit | after, before | bit),))
        else:
            rules.append((Cmp(0, CMP_MASKED_EQ, bit | after, bit),))
    return rules


def rules(caps: Iterable[str], kernel: tuple[int, int] | None = None) -> list[Rule]:
    """The filter's rules for a container keeping `caps` (pure: the policy without libseccomp)."""
    caps = frozenset(caps)
    out = [Rule(name) for name in ALWAYS_REFUSED]
    for gate, names in CAPABILITY_GATED:
        if not caps & gate:
            out += [Rule(name) for name in names]
    if "CAP_SYS_ADMIN" not in caps:
        out += [Rule("clone", args=(Cmp(0, CMP_MASKED_EQ, flag, flag),)) for flag in NAMESPACE_FLAGS]
        out.append(Rule("clone3", errno.ENOSYS))
    if "CAP_SYS_PTRACE" not in caps and (kernel or kernel_version()) < (4, 8):
        out += [Rule(name) for name in PTRACE_GROUP]
    out += [Rule("personality", args=args) for args in personality_refusals()]
    out.append(Rule("socket", args=(Cmp(0, CMP_EQ, AF_VSOCK),), abis=_DIRECT_SOCKET_ABIS))
    out.append(Rule("arch_prctl", abis=frozenset({"x86"})))  # Docker allows it on x86_64 and x32 only
    return out


def kernel_version() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


class Prepared:
    """A filter built (libseccomp context) but not loaded yet: the child builds it while the launcher is
    still attaching the network, so only seccomp_load() is left for the path to exec."""

    __slots__ = ("ctx",)

    def __init__(self, caps: Iterable[str]) -> None:
        self.ctx = _build(library(), rules(caps))


def load(caps: Iterable[str], prepared: Prepared | None = None) -> None:
    """Runs in the child: install the filter on the calling thread (and what it execs). Needs
    no_new_privs or CAP_SYS_ADMIN in the effective set."""
    lib = library()
    ctx = prepared.ctx if prepared is not None else _build(lib, rules(caps))
    try:
        _check(lib.seccomp_load(ctx), "seccomp_load")
    finally:
        lib.seccomp_release(ctx)
        if prepared is not None:
            prepared.ctx = None


def pseudo_code(caps: Iterable[str]) -> str:
    """libseccomp's readable rendering of the filter (for --debug and tests); loads nothing."""
    lib = library()
    ctx = _build(lib, rules(caps))
    fd = os.memfd_create("minirun-seccomp")
    try:
        _check(lib.seccomp_export_pfc(ctx, fd), "seccomp_export_pfc")
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd)) as f:
            return f.read()
    finally:
        os.close(fd)
        lib.seccomp_release(ctx)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


@functools.cache
def library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError as exc:
        raise OSError(errno.ENOENT, "libseccomp.so.2 not found: apt-get install libseccomp2") from exc
    ctx, u32 = ctypes.c_void_p, ctypes.c_uint32
    signatures = {
        "seccomp_init": ([u32], ctx),
        "seccomp_release": ([ctx], None),
        "seccomp_arch_native": ([], u32),
        "seccomp_arch_add": ([ctx, u32], ctypes.c_int),
        "seccomp_arch_remove": ([ctx, u32], ctypes.c_int),
        "seccomp_attr_set": ([ctx, ctypes.c_int, u32], ctypes.c_int),
        "seccomp_syscall_resolve_name": ([ctypes.c_char_p], ctypes.c_int),
        "seccomp_syscall_resolve_name_arch": ([u32, ctypes.c_char_p], ctypes.c_int),
        "seccomp_rule_add_array": (
            [ctx, u32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)],
            ctypes.c_int,
        ),
        "seccomp_merge": ([ctx, ctx], ctypes.c_int),
        "seccomp_load": ([ctx], ctypes.c_int),
        "seccomp_export_pfc": ([ctx, ctypes.c_int], ctypes.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def _check(result: int, what: str) -> None:
    # libseccomp returns -errno.
    if result < 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")


def _abis(lib: ctypes.CDLL) -> Iterator[tuple[str, int]]:
    native = lib.seccomp_arch_native()
    name = next((n for n, token in _ARCH_TOKENS.items() if token == native), "native")
    yield name, native
    for sub in _SUB_ABIS.get(name, ()):
        yield sub, _ARCH_TOKENS[sub]


def _build(lib: ctypes.CDLL, rule_list: list[Rule]) -> int:
    """One libseccomp context per ABI (so a rule can be limited to some ABIs), merged into the first."""
    merged = None
    try:
        for index, (abi, token) in enumerate(_abis(lib)):
            ctx = lib.seccomp_init(_ACT_ALLOW)
            if not ctx:
                raise OSError(errno.ENOMEM, "seccomp_init failed")
            try:
                if index:
                    _check(lib.seccomp_arch_add(ctx, token), f"seccomp_arch_add({abi})")
                    _check(lib.seccomp_arch_remove(ctx, lib.seccomp_arch_native()), "seccomp_arch_remove")
                # We set no_new_privs ourselves, when the profile asks for it.
                _check(lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0), "seccomp_attr_set(CTL_NNP)")
                for rule in rule_list:
                    if rule.abis is not None and abi not in rule.abis:
                        continue
                    # Negative: this ABI has no such syscall, or libseccomp does not know the name.
                    if lib.seccomp_syscall_resolve_name_arch(token, rule.syscall.encode()) < 0:
                        continue
                    args = (_ArgCmp * len(rule.args))(*(_ArgCmp(*c) for c in rule.args))
                    action = _ACT_ERRNO | rule.errno
                    # libseccomp takes the native number (negative: a pseudo-number) and translates it.
                    number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
                    _check(
                        lib.seccomp_rule_add_array(ctx, action, number, len(rule.args), args),
                        f"seccomp_rule_add({rule.syscall}, {abi})",
                    )
                if merged is None:
                    merged, ctx = ctx, None
                else:
                    _check(lib.seccomp_merge(merged, ctx), f"seccomp_merge({abi})")
                    ctx = None  # merged: libseccomp released it
            finally:
                if ctx:
                    lib.seccomp_release(ctx)
        # A binary search over syscall numbers instead of a linear scan (libseccomp >= 2.5; optional).
        lib.seccomp_attr_set(merged, _ATTR_CTL_OPTIMIZE, 2)
        return merged
    except BaseException:
        if merged:
            lib.seccomp_release(merged)
        raise
