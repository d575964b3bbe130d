"""`minirun run` in the foreground: validate, record, fork into new namespaces, attach, exec, wait, tear down.

The launcher stays in the host namespaces throughout; the container's first process is PID 1 of a new PID
namespace. See DESIGN.md "A run, step by step".
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import signal
import socket
import sys
import time

from minirun import paths
from minirun.errors import MinirunError
from minirun.kernel import proc
from minirun.kernel import syscalls as k
from minirun.plan import Step, Timing, run_plan
from minirun.runtime import child, gc, names, state
from minirun.runtime.privileges import require_root
from minirun.spec import ContainerSpec, container_env

# Signals `minirun` passes on to the container's PID 1 (which, as in Docker, ignores those it has no
# handler for).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
SI_KERNEL = 0x80  # si_code of signals the tty driver generates (Ctrl-C): PID 1 got those itself


class Launch:
    """The launcher's handles on a freshly forked container process."""

    __slots__ = ("pid", "netlink", "go_out", "error_in")

    def __init__(self, pid: int, go_out: int, error_in: int) -> None:
        self.pid = pid
        self.netlink: socket.socket | None = None
        self.go_out = go_out
        self.error_in = error_in

    def abort(self) -> None:
        """Undo of the fork: the child dies and is reaped, its namespaces with it."""
        with contextlib.suppress(OSError):
            os.close(self.go_out)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close_netns_handles()
        with contextlib.suppress(OSError):
            os.close(self.error_in)

    def close_netns_handles(self) -> None:
        # A socket or fd in the container's netns keeps it (and the veth) alive after the container ends.
        if self.netlink is not None:
            self.netlink.close()
            self.netlink = None


def new_container_id() -> str:
    return os.urandom(6).hex()


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def run(spec: ContainerSpec) -> int:
    """Run `spec` in the foreground; return the exit status Docker would give."""
    timings: list[Timing] = []
    clock = time.perf_counter()
    require_root()
    gc.reconcile()
    if spec.workdir and not os.path.isdir(spec.workdir):
        raise MinirunError(f"working directory {spec.workdir} does not exist", hint="pass an existing -w directory")

    network = None
    host_rtnl = None
    if spec.network == "bridge":
        from minirun.net import attach, firewall, rtnl
        from minirun.net import network as netdefs

        network = netdefs.default_network()
        firewall.nft_binary()
        host_rtnl = rtnl.Rtnl()
        attach.check_subnet_free(host_rtnl, network)
    timings.append(Timing("validate", time.perf_counter() - clock))

    container_id = new_container_id()
    name = spec.name or names.generate(container_id)
    hostname = spec.hostname or container_id
    record = {
        "id": container_id,
        "name": name,
        "hostname": hostname,
        "command": list(spec.command),
        "env": [f"{key}={value}" for key, value in spec.env],
        "workdir": spec.workdir,
        "created": now_iso(),
        "status": "creating",
        "owner": {"pid": os.getpid(), "started": proc.start_time(os.getpid())},
        "network_mode": spec.network,
        "auto_remove": spec.remove,
    }
    with contextlib.ExitStack() as undo:
        # The record is written before the name claim and the address, so `gc` never mistakes either for
        # an orphan while this run is still setting up.
        state.save(record)
        undo.callback(state.remove_file, paths.container_record(container_id))
        state.claim_name(name, container_id)
        undo.callback(state.release_name, name, container_id)

        clock = time.perf_counter()
        launch = fork_container(
            child.ChildConfig(
                command=spec.command,
                env=container_env(spec, hostname),
                hostname=hostname,
                workdir=spec.workdir,
                new_netns=spec.network != "host",
            )
        )
        undo.callback(launch.abort)
        timings.append(Timing("fork+unshare", time.perf_counter() - clock))

        steps: list[Step] = []
        netns_fd = -1
        if launch.netlink is not None:
            from minirun.net import attach, ipam, links, rtnl

            container_rtnl = rtnl.Rtnl(launch.netlink)
            ns_label = f"/proc/{launch.pid}/ns/net"
            if network is not None:
                netns_fd = os.open(ns_label, os.O_RDONLY | os.O_CLOEXEC)
                undo.callback(os.close, netns_fd)
                store = ipam.AddressStore(paths.ipam_dir(network.name), ipam.Allocator(network.subnet, network.gateway))
                attachment = attach.Attachment(
                    network=network,
                    host_veth=links.host_veth_name(container_id),
                    mtu=spec.mtu or 1500,
                )
                steps = attach.bridge_steps(
                    attachment, host_rtnl, container_rtnl, netns_fd, ns_label, store, container_id
                )
            else:
                steps = attach.loopback_steps(container_rtnl, ns_label)
        run_plan(steps, undo, timings)

        record.update(status="running", pid=launch.pid, pid_started=proc.start_time(launch.pid), started=now_iso())
        if network is not None:
            record["network"] = {
                "name": network.name,
                "bridge": network.bridge,
                "address": str(attachment.address),
                "gateway": str(network.gateway),
                "host_veth": attachment.host_veth,
                "mtu": attachment.mtu,
            }
        state.save(record)
        if netns_fd >= 0:
            os.close(netns_fd)
        launch.close_netns_handles()
        undo.pop_all()  # from here on the container runs; teardown (not rollback) cleans up

    try:
        clock = time.perf_counter()
        status = start_and_wait(launch, on_exec=lambda: _exec_confirmed(spec, timings, clock))
    finally:
        clock = time.perf_counter()
        gc.teardown(record, host_rtnl=host_rtnl, defer_link_check=True)
        if spec.timings:
            _print_timings([Timing("teardown", time.perf_counter() - clock)])
    return status


def fork_container(cfg: child.ChildConfig) -> Launch:
    """Fork the container's first process as PID 1 of a new PID namespace; it unshares the rest itself.

    unshare(CLONE_NEWPID) only affects the caller's future children, so the launcher unshares, forks once,
    and setns()es straight back to its own PID namespace: later forks (nft) stay on the host.
    """
    netlink_parent, netlink_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    go_in, go_out = os.pipe2(os.O_CLOEXEC)
    error_in, error_out = os.pipe2(os.O_CLOEXEC)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    # SIGCHLD stays blocked from before the fork, so an early exit is never missed by sigwaitinfo().
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    pid = -1
    try:
        k.unshare(k.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            os.close(own_pidns)
            netlink_parent.close()
            os.close(go_out)
            os.close(error_in)
            child.main(cfg, child.ChildPipes(netlink_child, go_in, error_out))
    finally:
        if pid != 0:
            k.setns(own_pidns, k.CLONE_NEWPID)
            os.close(own_pidns)
    netlink_child.close()
    os.close(go_in)
    os.close(error_out)

    launch = Launch(pid, go_out, error_in)
    if cfg.new_netns:
        _, fds, _, _ = socket.recv_fds(netlink_parent, 16, 1)
        if not fds:
            launch.abort()
            raise MinirunError(f"container setup failed: {_read_error(error_in)}")
        launch.netlink = socket.socket(fileno=fds[0])
    netlink_parent.close()
    return launch


def _read_error(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace")
    return text.partition(":")[2] or "the container process exited before it was ready"


def _exec_confirmed(spec: ContainerSpec, timings: list[Timing], clock: float) -> None:
    if spec.timings:
        timings.append(Timing("exec", time.perf_counter() - clock))
        in_process = sum(t.seconds for t in timings if t.name != "validate")
        _print_timings([*timings, Timing("fork-to-exec", in_process)])


def _print_timings(timings: list[Timing]) -> None:
    for t in timings:
        print(f"minirun: timing: {t.name:<14} {t.seconds * 1000:8.2f} ms", file=sys.stderr)


def start_and_wait(launch: Launch, on_exec=None) -> int:
    """Let the container exec, report exec failures, forward signals, and return its exit status."""
    os.write(launch.go_out, child.GO)
    os.close(launch.go_out)
    failure = os.read(launch.error_in, 4096).decode(errors="replace")
    os.close(launch.error_in)
    if failure:
        _report_child_failure(failure)
    elif on_exec is not None:
        on_exec()
    return _wait_forwarding_signals(launch.pid)


def _report_child_failure(failure: str) -> None:
    kind, _, detail = failure.partition(":")
    if kind == child.EXEC_FAILED:
        err, _, command = detail.partition(":")
        reason = {
            errno.ENOENT: "executable file not found in $PATH",
            errno.ENOTDIR: "executable file not found in $PATH",
            errno.EACCES: "permission denied (a directory, or no execute bit)",
            errno.ENOEXEC: "exec format error",
        }.get(int(err) if err.isdigit() else 0, os.strerror(int(err)) if err.isdigit() else err)
        print(f'minirun: error: exec: "{command}": {reason}', file=sys.stderr)
    else:
        print(f"minirun: error: container setup failed: {detail}", file=sys.stderr)


def _wait_forwarding_signals(pid: int) -> int:
    watched = {signal.SIGCHLD, *FORWARDED_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                break
            continue
        if info.si_code == SI_KERNEL:
            continue  # generated by the terminal for the whole foreground process group, PID 1 included
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, info.si_signo)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
