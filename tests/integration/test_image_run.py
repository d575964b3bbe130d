"""`minirun run --image`: the overlay root, /proc /sys /dev, the /etc files, and Docker's confinement
(capabilities, no_new_privs, seccomp, masked paths), checked from inside the container and on the host."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from minirun import paths
from tests.integration.conftest import MINIRUN, host_links, minirun, records, wait_running

DOCKER_DEFAULT_CAPS = 0x00000000A80425FB  # Docker's 14 default capabilities
CAP_NET_ADMIN = 12


def status_fields(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def run_image(image: str, *args: str, options: tuple[str, ...] = (), **kwargs):
    return minirun("run", "--rm", "--image", image, *options, *args, **kwargs)


def test_root_is_the_image_not_the_host(busybox_image):
    result = run_image(busybox_image, "ls", "/")
    assert result.returncode == 0, result.stderr
    entries = result.stdout.split()
    assert {"bin", "etc", "proc", "dev", "sys"} <= set(entries)
    assert "work" not in entries  # the host's /work (where this repository lives) is not there
    # The host's files are out of reach: no path leads back after pivot_root.
    assert run_image(busybox_image, "cat", "/etc/os-release").returncode == 1
    mounts = run_image(busybox_image, "cat", "/proc/self/mounts").stdout
    assert re.search(r"^overlay / overlay ", mounts, re.M), mounts


def test_image_defaults_and_exit_codes(busybox_image):
    # No command: the image's Cmd (sh) runs, reading the script from stdin.
    result = minirun("run", "--rm", "-i", "--image", busybox_image, input="echo from-default-cmd\n")
    assert result.returncode == 0 and result.stdout.strip() == "from-default-cmd", result.stderr
    assert run_image(busybox_image, "/etc/passwd").returncode == 126
    no_image = minirun("run", "--rm", "--image", "no-such-image", "true")
    assert no_image.returncode == 125 and 'no such image "no-such-image"' in no_image.stderr
    missing = run_image(busybox_image, "no-such-command")
    assert missing.returncode == 127 and "no-such-command" in missing.stderr


def test_writes_go_to_the_upper_dir_and_leave_with_the_container(busybox_image, state_dir):
    started = minirun("run", "-d", "--image", busybox_image, "sh", "-c", "echo changed > /etc/motd; exec sleep 60")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    (record,) = wait_running(state_dir)
    upper = Path(paths.container_data_dir(container_id)) / "upper" / "etc" / "motd"  # on the data root (disk)
    inspect = json.loads(minirun("image", "inspect", busybox_image).stdout)
    document = inspect[0] if isinstance(inspect, list) else inspect
    image_rootfs = Path(document["RootFS"] if isinstance(document["RootFS"], str) else document["RootFS"]["Path"])
    from tests.integration.conftest import wait_for

    wait_for(upper.exists, what="the write in the upper dir")
    assert upper.read_text() == "changed\n"
    assert not (image_rootfs / "etc" / "motd").exists()
    assert record["image"]["name"].startswith("busybox")
    assert minirun("rm", "-f", container_id).returncode == 0
    assert not Path(paths.container_data_dir(container_id)).exists()
    assert not (image_rootfs / "etc" / "motd").exists()


def test_etc_files_are_generated(busybox_image):
    result = run_image(
        busybox_image,
        "sh",
        "-c",
        "cat /etc/hostname; echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; "
        "ip -4 -o addr show eth0",
        options=("--hostname", "web", "--add-host", "db:10.1.2.3"),
    )
    assert result.returncode == 0, result.stderr
    hostname, hosts, resolv, addr = result.stdout.split("---\n")
    assert hostname == "web\n"
    address = re.search(r"inet (10\.77\.\d+\.\d+)/16", addr).group(1)
    lines = hosts.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert "10.1.2.3\tdb" in lines and lines[-1] == f"{address}\tweb"
    assert lines.index("10.1.2.3\tdb") < lines.index(f"{address}\tweb")
    assert "nameserver" in resolv


def test_resolv_conf_follows_dockers_rules(busybox_image, tmp_path):
    stub = tmp_path / "resolv.conf"
    stub.write_text("nameserver 127.0.0.53\nsearch corp.test\noptions edns0\n")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text(
        "nameserver 192.0.2.53\nnameserver 127.0.0.1\nnameserver 2001:db8::53\nsearch corp.test\noptions edns0\n"
    )
    env = {"MINIRUN_HOST_RESOLV_CONF": str(stub), "MINIRUN_RESOLVED_CONF": str(upstream)}
    resolv = run_image(busybox_image, "cat", "/etc/resolv.conf", env=env).stdout
    servers = re.findall(r"^nameserver (\S+)", resolv, re.M)
    assert servers == ["192.0.2.53"]  # resolved's upstream, without loopback and IPv6 servers
    assert "search corp.test" in resolv and "options edns0" in resolv

    loopback_only = tmp_path / "loopback.conf"
    loopback_only.write_text("nameserver 127.0.0.1\n")
    resolv = run_image(busybox_image, "cat", "/etc/resolv.conf", env={"MINIRUN_HOST_RESOLV_CONF": str(loopback_only)})
    assert re.findall(r"^nameserver (\S+)", resolv.stdout, re.M) == ["8.8.8.8", "8.8.4.4"]  # Docker's fallback

    given = run_image(busybox_image, "cat", "/etc/resolv.conf", options=("--dns", "192.0.2.9"), env=env)
    assert re.findall(r"^nameserver (\S+)", given.stdout, re.M) == ["192.0.2.9"]


def test_etc_files_cover_the_hosts_without_an_image():
    result = minirun("run", "--rm", "--hostname", "plain", "sh", "-c", "cat /etc/hostname; tail -n 1 /etc/hosts")
    assert result.returncode == 0, result.stderr
    hostname, own = result.stdout.splitlines()
    assert hostname == "plain" and re.fullmatch(r"10\.77\.\d+\.\d+\tplain", own)
    with open("/etc/hostname") as f:
        assert "plain" not in f.read()  # the host's file was covered, never written


def test_default_capabilities_no_new_privs_and_seccomp(busybox_image):
    status = status_fields(run_image(busybox_image, "cat", "/proc/self/status").stdout)
    assert int(status["CapEff"], 16) == DOCKER_DEFAULT_CAPS
    assert int(status["CapPrm"], 16) == DOCKER_DEFAULT_CAPS
    assert int(status["CapBnd"], 16) == DOCKER_DEFAULT_CAPS
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    # the same without an image
    status = status_fields(minirun("run", "--rm", "cat", "/proc/self/status").stdout)
    assert int(status["CapEff"], 16) == DOCKER_DEFAULT_CAPS and status["Seccomp"] == "2"


def test_no_net_admin_by_default():
    result = minirun("run", "--rm", "ip", "link", "add", "d0", "type", "dummy")
    assert result.returncode != 0 and "Operation not permitted" in result.stderr


def link_kind_this_kernel_has() -> str:
    """dummy when the kernel has it (this VM's has no modules at all); bridge is always there for minirun."""
    probe = subprocess.run(["ip", "link", "add", "kindprobe0", "type", "dummy"], capture_output=True)
    if probe.returncode == 0:
        subprocess.run(["ip", "link", "delete", "kindprobe0"], check=True)
        return "dummy"
    return "bridge"


def test_cap_add_net_admin_changes_only_the_containers_netns():
    kind = link_kind_this_kernel_has()
    result = minirun(
        "run", "--rm", "--cap-add", "NET_ADMIN", "sh", "-c", f"ip link add d0 type {kind} && ip -o link show d0"
    )
    assert result.returncode == 0 and "d0" in result.stdout, result.stderr
    assert "d0" not in host_links()


def test_cap_drop_all_and_security_opts(busybox_image):
    status = status_fields(
        run_image(busybox_image, "cat", "/proc/self/status", options=("--cap-drop", "ALL", "--cap-add", "chown")).stdout
    )
    assert int(status["CapEff"], 16) == 1 and int(status["CapBnd"], 16) == 1
    status = status_fields(
        run_image(
            busybox_image,
            "cat",
            "/proc/self/status",
            options=("--security-opt", "no-new-privileges=false", "--security-opt", "seccomp=unconfined"),
        ).stdout
    )
    assert status["NoNewPrivs"] == "0" and status["Seccomp"] == "0"


def test_privileged(busybox_image):
    result = run_image(
        busybox_image,
        "sh",
        "-c",
        "grep -E 'CapEff|Seccomp:' /proc/self/status; mkdir -p /mnt && mount -t tmpfs t /mnt && echo mounted",
        options=("--privileged",),
    )
    assert result.returncode == 0, result.stderr
    status = status_fields(result.stdout)
    ours = status_fields(Path("/proc/self/status").read_text())  # every capability minirun itself may hold
    assert int(status["CapEff"], 16) == int(ours["CapBnd"], 16)
    assert status["Seccomp"] == "0" and "mounted" in result.stdout
    mounts = run_image(busybox_image, "cat", "/proc/self/mounts", options=("--privileged",)).stdout
    assert " /proc/sys " not in mounts and " /sys/firmware " not in mounts  # no masked or read-only paths
    assert re.search(r"^sysfs /sys sysfs rw", mounts, re.M)


PYTHON_SYSCALL = (
    "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
    "r = libc.syscall(int(sys.argv[1]), 0, 0, 0, 0, 0); print(r, ctypes.get_errno())"
)
SYS_KEYCTL, SYS_ADD_KEY, SYS_IO_URING_SETUP = 250, 248, 425


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs the host's python3")
def test_blocked_syscalls_return_eperm():
    for number in (SYS_KEYCTL, SYS_ADD_KEY, SYS_IO_URING_SETUP):
        result = minirun("run", "--rm", "/usr/bin/python3", "-c", PYTHON_SYSCALL, str(number))
        assert result.stdout.split() == ["-1", "1"], (number, result.stdout, result.stderr)  # EPERM
    userns = minirun("run", "--rm", "unshare", "--user", "true")
    assert userns.returncode != 0 and "Operation not permitted" in userns.stderr
    unconfined = minirun(
        "run", "--rm", "--security-opt", "seccomp=unconfined", "/usr/bin/python3", "-c", PYTHON_SYSCALL, str(SYS_KEYCTL)
    )
    assert unconfined.stdout.split() != ["-1", "1"]


def test_masked_and_read_only_paths(busybox_image):
    script = (
        "wc -c < /proc/timer_list; ls /proc/acpi 2>/dev/null | wc -l; "
        "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo writable || echo read-only; "
        "touch /sys/x 2>/dev/null && echo sys-writable || echo sys-read-only; ls /dev"
    )
    result = run_image(busybox_image, "sh", "-c", script)
    lines = result.stdout.split()
    assert lines[:4] == ["0", "0", "read-only", "sys-read-only"], result.stdout + result.stderr
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "fd", "stdin", "ptmx"} <= set(lines[4:])
    # masked files are covered by the container's own /dev/null: nothing of the host's devtmpfs shows
    mounts = run_image(busybox_image, "cat", "/proc/self/mounts").stdout
    assert re.search(r"^tmpfs /proc/timer_list tmpfs", mounts, re.M) and "devtmpfs" not in mounts
    # what the kernel shows, not what root happens to be refused: read-only /proc/sys and /sys, masked dirs
    assert re.search(r"^proc /proc/sys proc ro,", mounts, re.M), mounts
    assert re.search(r"^sysfs /sys sysfs ro,", mounts, re.M), mounts
    assert re.search(r"^tmpfs /sys/firmware tmpfs ro", mounts, re.M), mounts


def test_user_identity(busybox_image):
    assert run_image(busybox_image, "id", options=("--user", "1000")).stdout == "uid=1000 gid=0(root) groups=0(root)\n"
    assert run_image(busybox_image, "id", "-u", options=("--user", "nobody")).stdout.strip() == "65534"
    result = run_image(
        busybox_image, "sh", "-c", "id -u; id -g; grep CapEff /proc/self/status", options=("-u", "1000:1000")
    )
    uid, gid, cap = result.stdout.splitlines()
    assert (uid, gid) == ("1000", "1000") and int(cap.split()[1], 16) == 0
    unknown = run_image(busybox_image, "id", options=("--user", "nosuchuser"))
    assert unknown.returncode == 125 and "unable to find user nosuchuser" in unknown.stderr


def test_read_only_root(busybox_image):
    result = run_image(
        busybox_image, "sh", "-c", "touch /x; echo ok > /dev/shm/y && cat /dev/shm/y", options=("--read-only",)
    )
    assert "Read-only file system" in result.stderr and result.stdout.strip() == "ok"
    assert minirun("run", "--rm", "--read-only", "true").returncode == 125


def test_exec_gets_the_containers_root_and_confinement(busybox_image, state_dir):
    started = minirun("run", "-d", "--image", busybox_image, "--user", "1000", "sleep", "60")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    wait_running(state_dir)
    try:
        inside = minirun("exec", container_id, "sh", "-c", "id -u; test -e /etc/os-release || echo image-root")
        assert inside.stdout.split() == ["1000", "image-root"], inside.stderr
        status = status_fields(minirun("exec", "-u", "0", container_id, "cat", "/proc/self/status").stdout)
        assert int(status["CapEff"], 16) == DOCKER_DEFAULT_CAPS and status["Seccomp"] == "2"
        privileged = status_fields(minirun("exec", "--privileged", container_id, "cat", "/proc/self/status").stdout)
        assert privileged["Seccomp"] == "0"
    finally:
        minirun("rm", "-f", container_id)


def test_pod_members_share_the_pods_etc_files(busybox_image, state_dir):
    first = minirun("run", "-d", "--pod", "imgpod", "--name", "a", "--image", busybox_image, "sleep", "60")
    assert first.returncode == 0, first.stderr
    try:
        status = status_fields(minirun("exec", "a", "cat", "/proc/self/status").stdout)
        assert int(status["CapEff"], 16) == DOCKER_DEFAULT_CAPS and status["Seccomp"] == "2"  # members are confined
        hosts = minirun(
            "run", "--rm", "--pod", "imgpod", "--image", busybox_image, "cat", "/etc/hosts", "/etc/hostname"
        )
        assert hosts.returncode == 0, hosts.stderr
        assert hosts.stdout.splitlines()[-1] == "imgpod"
        assert re.search(r"^10\.77\.\d+\.\d+\timgpod$", hosts.stdout, re.M)
        assert (Path(paths.pod_data_dir("imgpod")) / "etc" / "hosts").exists()
    finally:
        minirun("rm", "-f", "a")
        minirun("pod", "rm", "-f", "imgpod")
    assert not Path(paths.pod_data_dir("imgpod")).exists()
    assert not records(state_dir)


def test_root_gets_the_containers_groups_not_minirun_s(busybox_image, state_dir):
    """Supplementary groups of the process that started minirun (here: disk, 4242) never reach a container."""
    as_disk = ["setpriv", "--groups", "6,4242", MINIRUN]
    inside = subprocess.run([*as_disk, "run", "--rm", "--image", busybox_image, "id"], capture_output=True, text=True)
    assert inside.stdout == "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n", inside.stderr  # Docker's
    plain = subprocess.run([*as_disk, "run", "--rm", "id", "-G"], capture_output=True, text=True)
    assert plain.stdout.split() == ["0"], plain.stderr
    started = minirun("run", "-d", "--image", busybox_image, "sleep", "60")
    try:
        wait_running(state_dir)
        execd = subprocess.run([*as_disk, "exec", started.stdout.strip(), "id", "-G"], capture_output=True, text=True)
        assert execd.stdout.split() == ["0", "10"], execd.stderr
    finally:
        minirun("rm", "-f", started.stdout.strip())


def test_read_only_root_still_gets_its_working_directory(busybox_image):
    result = run_image(busybox_image, "pwd", options=("--read-only", "-w", "/made/here"))
    assert result.returncode == 0 and result.stdout == "/made/here\n", result.stderr
