"""`--cap-add`, `--cap-drop`, `--privileged` and `--security-opt` as Docker reads them, the profile's record,
and the seccomp policy as data (nothing here confines anything)."""

from __future__ import annotations

import errno
import json
import os
import random

import pytest

from minirun.errors import ConfigError
from minirun.security import SecurityProfile, capabilities, default_profile, profile_from_options
from minirun.security import seccomp as sc

DOCKER_DEFAULT = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
}


@pytest.fixture(autouse=True)
def full_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that knows all 41 capabilities and a launcher that holds them, whatever runs the tests."""
    monkeypatch.setattr(capabilities, "last_cap", lambda: 40)
    monkeypatch.setattr(capabilities, "bounding", lambda: (1 << 41) - 1)


def test_default_is_dockers_fourteen():
    profile = default_profile()
    assert profile.capabilities == DOCKER_DEFAULT
    assert capabilities.mask(profile.capabilities) == 0xA80425FB
    assert profile.no_new_privs and profile.seccomp and not profile.privileged
    assert profile_from_options() == profile


@pytest.mark.parametrize("name", ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "cap_net_admin", "Net_Admin"])
def test_cap_add_spellings(name):
    assert profile_from_options(cap_add=[name]).capabilities == DOCKER_DEFAULT | {"CAP_NET_ADMIN"}


def test_cap_drop():
    assert profile_from_options(cap_drop=["mknod", "CAP_NET_RAW"]).capabilities == DOCKER_DEFAULT - {
        "CAP_MKNOD",
        "CAP_NET_RAW",
    }


def test_drop_all_then_add():
    profile = profile_from_options(cap_add=["NET_BIND_SERVICE"], cap_drop=["ALL"])
    assert profile.capabilities == {"CAP_NET_BIND_SERVICE"}
    assert profile_from_options(cap_drop=["all"]).capabilities == frozenset()


def test_add_all_is_every_capability_the_kernel_knows_minus_drops(monkeypatch):
    assert profile_from_options(cap_add=["ALL"]).capabilities == set(capabilities.NAMES)
    assert profile_from_options(cap_add=["all"], cap_drop=["SYS_ADMIN"]).capabilities == set(capabilities.NAMES) - {
        "CAP_SYS_ADMIN"
    }
    # An older kernel (5.4: up to CAP_AUDIT_READ) has fewer.
    monkeypatch.setattr(capabilities, "last_cap", lambda: 37)
    assert "CAP_BPF" not in profile_from_options(cap_add=["ALL"]).capabilities
    assert len(profile_from_options(cap_add=["ALL"]).capabilities) == 38


def test_add_wins_over_drop_of_the_same_name():
    assert "CAP_NET_ADMIN" in profile_from_options(cap_add=["NET_ADMIN"], cap_drop=["NET_ADMIN"]).capabilities


@pytest.mark.parametrize("option", ["cap_add", "cap_drop"])
def test_unknown_capability(option):
    with pytest.raises(ConfigError) as info:
        profile_from_options(**{option: ["NET_ADMINN"]})
    assert "NET_ADMINN" in info.value.msg
    assert f"--{option.replace('_', '-')}" in info.value.msg
    assert "man 7 capabilities" in info.value.hint


def test_capability_the_kernel_or_launcher_lacks(monkeypatch):
    monkeypatch.setattr(capabilities, "last_cap", lambda: 37)
    with pytest.raises(ConfigError, match="CAP_BPF is not supported by this kernel or not available here"):
        profile_from_options(cap_add=["BPF"])
    monkeypatch.setattr(capabilities, "bounding", lambda: ~(1 << 24) & ((1 << 38) - 1))
    with pytest.raises(ConfigError, match="CAP_SYS_RESOURCE"):
        profile_from_options(cap_add=["SYS_RESOURCE"])
    assert "CAP_SYS_RESOURCE" not in profile_from_options(privileged=True).capabilities
    # Dropping what we do not hold is harmless.
    profile_from_options(cap_drop=["SYS_RESOURCE"])


def test_privileged():
    profile = profile_from_options(privileged=True, cap_drop=["NET_ADMIN"])
    assert profile.capabilities == set(capabilities.NAMES)  # Docker ignores --cap-drop with --privileged
    assert profile.privileged and not profile.seccomp and profile.no_new_privs
    assert not profile_from_options(privileged=True, security_opts=["no-new-privileges=false"]).no_new_privs


def test_privileged_still_validates_names():
    with pytest.raises(ConfigError):
        profile_from_options(privileged=True, cap_add=["BOGUS"])


@pytest.mark.parametrize(
    ("opts", "no_new_privs", "seccomp"),
    [
        (["no-new-privileges"], True, True),
        (["no-new-privileges=true"], True, True),
        (["no-new-privileges:true"], True, True),
        (["no-new-privileges=false"], False, True),
        (["no-new-privileges:false"], False, True),
        (["no-new-privileges=0"], False, True),
        (["seccomp=unconfined"], True, False),
        (["seccomp:unconfined"], True, False),
        (["seccomp=builtin"], True, True),
        (["seccomp=unconfined", "no-new-privileges=false"], False, False),
    ],
)
def test_security_opts(opts, no_new_privs, seccomp):
    profile = profile_from_options(security_opts=opts)
    assert (profile.no_new_privs, profile.seccomp) == (no_new_privs, seccomp)


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ("seccomp=/etc/profile.json", "custom seccomp profiles are not supported"),
        ("apparmor=unconfined", "not supported"),
        ("label=disable", "not supported"),
        ("label:disable", "not supported"),
        ("systempaths=unconfined", "not supported"),
        ("no-new-privileges=maybe", "'maybe' is not true or false"),
    ],
)
def test_unsupported_security_opts(opt, message):
    with pytest.raises(ConfigError) as info:
        profile_from_options(security_opts=[opt])
    assert opt in info.value.msg and message in info.value.msg
    assert info.value.hint


@pytest.mark.parametrize(
    "profile",
    [
        default_profile(),
        SecurityProfile(frozenset(), no_new_privs=False, seccomp=False),
        SecurityProfile(frozenset({"CAP_NET_ADMIN", "CAP_CHOWN"}), seccomp=False),
        SecurityProfile(frozenset(capabilities.NAMES), seccomp=False, privileged=True),
    ],
)
def test_record_round_trip(profile):
    record = json.loads(json.dumps(profile.as_record()))
    assert SecurityProfile.from_record(record) == profile


def test_record_shape_and_old_records():
    record = default_profile().as_record()
    assert record["capabilities"][:3] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]  # capability order
    assert record["seccomp"] == "default"
    assert SecurityProfile.from_record(None) == default_profile()
    assert SecurityProfile.from_record({}) == default_profile()
    assert SecurityProfile.from_record({"no_new_privs": False}) == default_profile()._replace(no_new_privs=False)
    newer = SecurityProfile.from_record({"capabilities": ["CAP_CHOWN", "CAP_FUTURE"]})
    assert newer.capabilities == {"CAP_CHOWN"}


def test_describe():
    assert default_profile().describe() == "capabilities: default; no_new_privs; seccomp: default"
    profile = profile_from_options(cap_add=["NET_ADMIN"], cap_drop=["MKNOD"], security_opts=["seccomp=unconfined"])
    assert profile.describe() == "capabilities: default +NET_ADMIN -MKNOD; no_new_privs; seccomp: unconfined"
    assert "none" in profile_from_options(cap_drop=["ALL"]).describe()
    assert "all (--privileged)" in profile_from_options(privileged=True).describe()


# The seccomp policy, as data.


def refused(caps, kernel=(6, 1)) -> dict[str, int]:
    return {rule.syscall: rule.errno for rule in sc.rules(caps, kernel) if not rule.args}


def test_refusals_whatever_the_capabilities():
    for caps in (capabilities.DEFAULT, frozenset(capabilities.NAMES)):
        seen = refused(caps)
        for name in ("kexec_load", "keyctl", "add_key", "request_key", "userfaultfd", "pivot_root", "swapon"):
            assert seen[name] == errno.EPERM, name
        for name in ("ptrace", "process_vm_readv", "adjtimex", "clock_adjtime", "name_to_handle_at", "execve"):
            assert name not in seen, name  # Docker allows them


def test_capability_gated_groups():
    default = refused(capabilities.DEFAULT)
    for name in ("mount", "umount2", "unshare", "setns", "bpf", "perf_event_open", "init_module", "reboot"):
        assert default[name] == errno.EPERM
    assert default["clone3"] == errno.ENOSYS
    assert "chroot" not in default  # CAP_SYS_CHROOT is a default capability
    admin = refused(capabilities.DEFAULT | {"CAP_SYS_ADMIN"})
    assert not {"mount", "unshare", "setns", "clone3", "bpf", "perf_event_open", "syslog"} & admin.keys()
    assert "init_module" in admin and "kcmp" in admin
    assert "clone" not in {r.syscall for r in sc.rules(capabilities.DEFAULT | {"CAP_SYS_ADMIN"}, (6, 1))}
    bpf = refused(capabilities.DEFAULT | {"CAP_BPF"})
    assert "bpf" not in bpf and "mount" in bpf
    assert "kcmp" not in refused(capabilities.DEFAULT | {"CAP_SYS_PTRACE"})
    assert "ptrace" in refused(capabilities.DEFAULT, kernel=(4, 4))  # before 4.8, as Docker


def test_clone_namespace_flags_are_refused_one_bit_each():
    masks = {r.args[0].a for r in sc.rules(capabilities.DEFAULT, (6, 1)) if r.syscall == "clone"}
    assert sum(masks) == 0x7E020000 and len(masks) == 7


def _personality_refused(value: int) -> bool:
    for (cmp,) in sc.personality_refusals():
        if cmp.op == sc.CMP_GT and value > cmp.a or cmp.op == sc.CMP_MASKED_EQ and value & cmp.a == cmp.b:
            return True
    return False


def test_personality_rules_refuse_exactly_what_docker_refuses():
    allowed = {0, sc.PER_LINUX32, sc.UNAME26, sc.PER_LINUX32 | sc.UNAME26, 0xFFFFFFFF}
    rng = random.Random(5)
    samples = set(allowed)
    samples |= {1 << b for b in range(64)} | {0xFFFFFFFF ^ (1 << b) for b in range(32)}
    samples |= {(1 << a) | (1 << b) | (1 << c) for a in range(33) for b in range(33) for c in range(33)}
    samples |= {rng.getrandbits(32) for _ in range(20000)} | {rng.getrandbits(64) for _ in range(2000)}
    samples |= {0x0040000, 0x0400000, 0x0020008 | 0x0040000, 0xFFFFFFFE, 0x1_0000_0000}
    for value in samples:
        assert _personality_refused(value) == (value not in allowed), hex(value)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="checks the x86 ABIs")
def test_filter_builds_for_the_three_x86_abis():
    text = sc.pseudo_code(capabilities.DEFAULT)
    assert "filter for arch x86_64" in text and "filter for arch x86 " in text and "filter for arch x32" in text
    assert '"kexec_load"' in text and '"vm86"' in text
    assert '"mount"' not in sc.pseudo_code(frozenset(capabilities.NAMES))
