"""minirun.security applied for real: each test forks a child that confines itself (never the pytest
process), then reports through a pipe what it, or the command it execs, sees."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import traceback

import pytest

from minirun.security import SecurityProfile, capabilities, confine, default_profile, profile_from_options
from minirun.security import seccomp as sc

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers below are x86_64's")

DEFAULT_MASK = 0xA80425FB
# x86_64 syscall numbers
SYS = {
    "clone": 56,
    "socket": 41,
    "ptrace": 101,
    "personality": 135,
    "mount": 165,
    "init_module": 175,
    "kexec_load": 246,
    "add_key": 248,
    "keyctl": 250,
    "unshare": 272,
    "setns": 308,
    "bpf": 321,
    "userfaultfd": 323,
    "clone3": 435,
}
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
KEY_SPEC_SESSION_KEYRING = -3
ADDR_NO_RANDOMIZE = 0x0040000
AF_VSOCK = 40

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def syscall(name: str, *args: int | bytes | None) -> tuple[int, int]:
    """(return value, errno) of the raw syscall."""
    ctypes.set_errno(0)
    c_args = [ctypes.c_char_p(a) if isinstance(a, bytes) or a is None else ctypes.c_long(a) for a in args]
    result = _libc.syscall(ctypes.c_long(SYS[name]), *c_args)
    return result, ctypes.get_errno() if result == -1 else 0


def in_child(body) -> dict:
    """Fork; the child runs `body()` and sends back its JSON result (or the traceback)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            result = body(write_end)
            os.write(write_end, json.dumps(result).encode())
        except BaseException:  # noqa: BLE001 - report anything to the parent, never unwind into pytest
            os.write(write_end, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"error": "child said nothing"}')
    assert "error" not in result, result["error"]
    return result


def status_after_exec(profile: SecurityProfile, user=None) -> dict[str, str]:
    """/proc/self/status of a command exec'd after confine: what the container's command sees."""

    def body(out: int) -> dict:
        confine(profile, user)
        os.dup2(out, 1)
        os.execv("/bin/cat", ["cat", "/proc/self/status"])

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            body(write_end)
        except BaseException:  # noqa: BLE001 - never unwind into pytest from a forked child
            traceback.print_exc()
        finally:
            os._exit(99)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def caps_of(status: dict[str, str], key: str) -> int:
    return int(status[key], 16)


def test_default_profile_matches_docker():
    status = status_after_exec(default_profile())
    assert caps_of(status, "CapInh") == 0
    assert caps_of(status, "CapPrm") == DEFAULT_MASK
    assert caps_of(status, "CapEff") == DEFAULT_MASK
    assert caps_of(status, "CapBnd") == DEFAULT_MASK
    assert caps_of(status, "CapAmb") == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert status["Uid"].split() == ["0"] * 4


def test_cap_add_net_admin_is_effective():
    status = status_after_exec(profile_from_options(cap_add=["NET_ADMIN"]))
    assert caps_of(status, "CapEff") == DEFAULT_MASK | 1 << capabilities.NUMBERS["CAP_NET_ADMIN"]
    assert caps_of(status, "CapBnd") == caps_of(status, "CapEff")


def test_cap_drop_all_leaves_nothing():
    status = status_after_exec(profile_from_options(cap_drop=["ALL"]))
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert caps_of(status, key) == 0, key
    assert status["Seccomp"].strip() == "2"


def test_privileged_keeps_everything_without_seccomp():
    status = status_after_exec(profile_from_options(privileged=True))
    everything = capabilities.mask(capabilities.supported())
    assert caps_of(status, "CapEff") == everything
    assert caps_of(status, "CapBnd") == everything
    assert status["Seccomp"].strip() == "0"
    assert status["NoNewPrivs"].strip() == "1"


def test_user_loses_permitted_and_effective_but_keeps_the_bounding_set():
    status = status_after_exec(default_profile(), (1000, 1000, (1001,)))
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert status["Groups"].split() == ["1001"]
    assert caps_of(status, "CapPrm") == 0
    assert caps_of(status, "CapEff") == 0
    assert caps_of(status, "CapInh") == 0
    assert caps_of(status, "CapBnd") == DEFAULT_MASK
    assert status["Seccomp"].strip() == "2"


@pytest.mark.parametrize("user", [None, (1000, 1000, ())])
def test_without_no_new_privs_the_filter_is_loaded_before_sys_admin_goes(user):
    profile = profile_from_options(security_opts=["no-new-privileges=false"])
    status = status_after_exec(profile, user)
    assert status["NoNewPrivs"].strip() == "0"
    assert status["Seccomp"].strip() == "2"
    assert caps_of(status, "CapEff") == (DEFAULT_MASK if user is None else 0)


def _refusals() -> dict:
    out = {
        "keyctl": syscall("keyctl", 0, KEY_SPEC_SESSION_KEYRING, 0),
        "add_key": syscall("add_key", b"user", b"minirun-test", b"x", 1, KEY_SPEC_SESSION_KEYRING),
        "bpf": syscall("bpf", 5, None, 0),
        "kexec_load": syscall("kexec_load", 0, 0, None, 0),
        "init_module": syscall("init_module", None, 0, b""),
        "userfaultfd": syscall("userfaultfd", 0),
        # A file system type that does not exist: without the filter, ENODEV and nothing mounted.
        "mount": syscall("mount", b"none", b"/nonexistent-minirun", b"minirun-nofs", 0, None),
        "setns": syscall("setns", -1, 0),
        "unshare": syscall("unshare", CLONE_NEWUSER),
        "personality": syscall("personality", ADDR_NO_RANDOMIZE),
        "socket_vsock": syscall("socket", AF_VSOCK, 1, 0),
        "clone3": syscall("clone3", None, 0),
    }
    result, err = syscall("clone", CLONE_NEWUSER | SIGCHLD, 0, None, None, 0)
    if result == 0:  # the filter failed and we are a clone: vanish at once
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
    out["clone_newuser"] = (result, err)
    # Allowed, as in Docker.
    out["personality_query"] = syscall("personality", 0xFFFFFFFF)
    out["ptrace"] = syscall("ptrace", 3, 0x3FFFFFF0, 0, 0)  # PTRACE_PEEKUSER on no such process
    return out


EXPECTED_REFUSALS = {
    "keyctl": errno.EPERM,
    "add_key": errno.EPERM,
    "bpf": errno.EPERM,
    "kexec_load": errno.EPERM,
    "init_module": errno.EPERM,
    "userfaultfd": errno.EPERM,
    "mount": errno.EPERM,
    "setns": errno.EPERM,
    "unshare": errno.EPERM,
    "personality": errno.EPERM,
    "socket_vsock": errno.EPERM,
    "clone3": errno.ENOSYS,
    "clone_newuser": errno.EPERM,
}


def _assert_refusals(seen: dict) -> None:
    for name, err in EXPECTED_REFUSALS.items():
        assert seen[name] == [-1, err], f"{name}: {seen[name]}, want errno {errno.errorcode[err]}"
    assert seen["personality_query"][0] >= 0
    assert seen["ptrace"] == [-1, errno.ESRCH]


def test_the_filter_itself_refuses_as_docker():
    """Loaded alone in a child that keeps all of root's capabilities: every refusal is the filter's."""

    def body(_out: int) -> dict:
        import _prctl

        _prctl.prctl(_prctl.PR_SET_NO_NEW_PRIVS, 1)
        sc.load(capabilities.DEFAULT)
        return _refusals()

    _assert_refusals(in_child(body))


def test_confined_default_refuses_as_docker():
    _assert_refusals(in_child(lambda _out: (confine(default_profile(), None), _refusals())[1]))


def test_unconfined_control_gets_the_kernel_answers():
    def body(_out: int) -> dict:
        confine(profile_from_options(security_opts=["seccomp=unconfined"]), None)
        return {
            "keyctl": syscall("keyctl", 0, KEY_SPEC_SESSION_KEYRING, 0),
            "clone3": syscall("clone3", None, 0),
            "setns": syscall("setns", -1, 0),
        }

    seen = in_child(body)
    assert seen["keyctl"][0] != -1 or seen["keyctl"][1] != errno.EPERM
    assert seen["clone3"] == [-1, errno.EINVAL]
    assert seen["setns"] == [-1, errno.EBADF]


def test_sys_admin_relaxes_its_group_only():
    def body(_out: int) -> dict:
        confine(profile_from_options(cap_add=["SYS_ADMIN"]), None)
        return {
            "setns": syscall("setns", -1, 0),
            "mount": syscall("mount", b"none", b"/nonexistent-minirun", b"minirun-nofs", 0, None),
            "clone3": syscall("clone3", None, 0),
            "keyctl": syscall("keyctl", 0, KEY_SPEC_SESSION_KEYRING, 0),
        }

    seen = in_child(body)
    assert seen["setns"] == [-1, errno.EBADF]
    assert seen["mount"][1] in (errno.ENODEV, errno.ENOENT)
    assert seen["clone3"] == [-1, errno.EINVAL]
    assert seen["keyctl"] == [-1, errno.EPERM]


def test_fork_and_exec_still_work_after_confine():
    def body(_out: int) -> dict:
        confine(default_profile(), (1000, 1000, ()))
        pid = os.fork()  # clone without namespace flags
        if pid == 0:
            os.execv("/bin/true", ["true"])
        forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        # glibc's posix_spawn tries clone3 first and falls back to clone on ENOSYS
        pid = os.posix_spawn("/bin/true", ["true"], {})
        spawned = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        return {"forked": forked, "spawned": spawned}

    assert in_child(body) == {"forked": 0, "spawned": 0}


def test_a_capability_minirun_lacks_cannot_be_granted():
    def body(_out: int) -> dict:
        import _prctl

        net_admin = capabilities.NUMBERS["CAP_NET_ADMIN"]
        _prctl.prctl(_prctl.PR_CAPBSET_DROP, net_admin)
        _prctl.set_caps([], [], [], [net_admin], [net_admin], [])
        try:
            confine(profile_from_options(cap_add=["NET_ADMIN"]), None)
        except OSError as exc:
            return {"errno": exc.errno, "text": str(exc)}
        return {"errno": 0}

    seen = in_child(body)
    assert seen["errno"] == errno.EPERM
    assert "set capabilities" in seen["text"] and "NET_ADMIN" in seen["text"]
