"""What a container sees and may do, decided before it forks: its image (or the host's tree), command,
environment, user, /etc files and security profile. Validation only, except `materialize`, which writes
the container's directory (its /etc files and overlay dirs) and is undone with it."""

from __future__ import annotations

import os
import shlex
from typing import Any, NamedTuple

from minirun import paths
from minirun.errors import ConfigError, MinirunError
from minirun.fs import etcfiles, tree
from minirun.spec import ContainerSpec, container_env


class Sandbox(NamedTuple):
    command: tuple[str, ...]
    env: dict[str, str]
    workdir: str | None
    image: Any  # minirun.fs.images.Image or None
    image_root: Any  # minirun.fs.rootfs.ImageRoot or None
    etc_dir: str
    shared_etc: bool  # the pod's files, not this container's
    security: Any  # minirun.security.SecurityProfile
    user: tuple[int, int, tuple[int, ...]] | None
    user_spec: str | None  # what --user (or the image's User) said; None: the default, root
    name_options: etcfiles.NameOptions
    resolv_text: str

    def record_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "security": self.security.as_record(),
            "user": list(self.user[:2]) + [list(self.user[2])] if self.user else None,
            "user_spec": self.user_spec,
            "etc_dir": self.etc_dir,
        }
        if self.image is not None:
            fields["image"] = {"id": self.image.id, "name": self.image.name}
            fields["read_only"] = self.image_root.read_only
        return fields


def container_dir(container_id: str) -> str:
    """On the data root (disk), never on the state root (tmpfs): the container writes here (its upper dir,
    its /etc files, which are bind-mounted writable as Docker's are) and a tmpfs /run must not fill up."""
    return paths.container_data_dir(container_id)


def _state_root_container_dir(container_id: str) -> str:
    # Where minirun kept it before it moved to the data root: still removed, so an upgrade leaves nothing.
    return os.path.join(paths.containers_dir(), container_id)


def pod_etc_dir(pod_name: str) -> str:
    return os.path.join(paths.pod_data_dir(pod_name), "etc")


class _Resolved(NamedTuple):
    """What the image (or the host's tree) decides before the user's flags do."""

    command: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str | None
    user_spec: str | None
    etc_root: str  # where /etc/passwd and /etc/group are read from
    image: Any = None
    image_root: Any = None


def plan(
    spec: ContainerSpec,
    command: tuple[str, ...],
    container_id: str,
    hostname: str,
    *,
    pod: dict[str, Any] | None,
    resolver: str | None,
) -> Sandbox:
    """Resolve and validate everything about the container's view; raise MinirunError, change nothing."""
    from minirun.security import profile_from_options

    security = profile_from_options(spec.cap_add, spec.cap_drop, spec.privileged, spec.security_opts)
    image_given = spec.image is not None
    resolved = _from_image(spec, command, container_id) if image_given else _from_host(spec, command)
    workdir = resolved.workdir
    if workdir and not workdir.startswith("/"):
        raise ConfigError(f'working directory "{workdir}" is not absolute', hint="give -w an absolute path")
    from minirun.fs import users

    # Root too: its groups come from the container's /etc/group, never from minirun's own process.
    account = users.resolve(resolved.user_spec or "0", resolved.etc_root)
    user, home = account.ids(), account.home
    env = container_env(spec, hostname, resolved.env, home or "/root")
    options = etcfiles.NameOptions(spec.dns, spec.add_hosts)
    shared = pod is not None and not spec.dns and not spec.add_hosts
    etc_dir = pod_etc_dir(pod["name"]) if shared else os.path.join(container_dir(container_id), "etc")
    return Sandbox(
        resolved.command,
        env,
        workdir,
        resolved.image,
        resolved.image_root,
        etc_dir,
        shared,
        security,
        user,
        resolved.user_spec,
        options,
        _resolv(spec, resolver),
    )


def _from_image(spec: ContainerSpec, command: tuple[str, ...], container_id: str) -> _Resolved:
    from minirun.fs import images, rootfs

    try:
        image = images.resolve(spec.image)
    except MinirunError as exc:  # `run` exits 125 when minirun itself fails (image commands exit 1)
        raise MinirunError(exc.msg, hint=exc.hint) from None
    config = image.config
    entrypoint = tuple(shlex.split(spec.entrypoint)) if spec.entrypoint is not None else config.entrypoint
    # Docker: --entrypoint drops the image's Cmd too; the user's CMD replaces Cmd, never Entrypoint.
    arguments = command or (config.cmd if spec.entrypoint is None else ())
    command = (*entrypoint, *arguments)
    if not command:
        raise ConfigError(
            f"image {image.name} has no Cmd or Entrypoint and no command was given",
            hint=f"add one: minirun run --image {spec.image} CMD",
        )
    return _Resolved(
        command,
        config.env,
        spec.workdir or config.workdir or None,
        spec.user or config.user or None,
        image.rootfs,
        image,
        rootfs.image_root(container_dir(container_id), image.rootfs, spec.read_only),
    )


def _from_host(spec: ContainerSpec, command: tuple[str, ...]) -> _Resolved:
    if spec.entrypoint is not None:
        command = (*shlex.split(spec.entrypoint), *command)
    elif spec.workdir and not os.path.isdir(spec.workdir):
        raise MinirunError(f"working directory {spec.workdir} does not exist", hint="pass an existing -w directory")
    return _Resolved(command, (), spec.workdir, spec.user, "/")


def _resolv(spec: ContainerSpec, resolver: str | None) -> str:
    path, text = etcfiles.host_resolv_conf()
    if spec.network == "host" and not spec.dns and spec.pod is None:
        return text  # the host's own netns: its loopback resolvers are reachable
    return etcfiles.resolv_conf(text, etcfiles.NameOptions(spec.dns, spec.add_hosts), resolver)


def materialize(sandbox: Sandbox, container_id: str, hostname: str, address: str | None) -> None:
    """Write the /etc files (the address is filled in later, by `set_address`, once IPAM gave one) and the
    overlay's dirs, in the container's directory on the data root (mode 0700: its files are its own)."""
    try:
        os.makedirs(os.path.dirname(container_dir(container_id)), mode=0o700, exist_ok=True)
        os.makedirs(container_dir(container_id), mode=0o700, exist_ok=True)
        if sandbox.shared_etc:
            os.makedirs(os.path.dirname(sandbox.etc_dir), mode=0o700, exist_ok=True)
        etcfiles.write_all(sandbox.etc_dir, hostname, address, sandbox.resolv_text, sandbox.name_options)
        if sandbox.image_root is not None:
            from minirun.fs import rootfs

            rootfs.prepare_dirs(sandbox.image_root)
    except OSError as exc:
        raise MinirunError(
            f"cannot write the container's files under {paths.data_root()}: {exc.strerror}",
            hint=f"free space there, or point {paths.DATA_DIR_ENV} at a writable disk",
        ) from None


def set_address(sandbox: Sandbox, hostname: str, address: str) -> None:
    etcfiles.write_in_place(
        os.path.join(sandbox.etc_dir, "hosts"), etcfiles.hosts(hostname, address, sandbox.name_options)
    )


def remove_container_dir(container_id: str) -> bool:
    """The container's upper dir, overlay scratch, /etc files, private dirs and logs. "Already gone" is
    success (False).

    The container wrote that tree: however deep, wide, chmod'ed or linked it is, it goes without recursion
    and without following a link; raises fs.tree.TreeNotRemoved naming what could not go (immutable...)."""
    found = False
    for directory in (container_dir(container_id), _state_root_container_dir(container_id)):
        if os.path.lexists(directory):
            tree.remove_tree(directory).check()
            found = True
    return found


def remove_pod_etc(pod_name: str) -> bool:
    """The pod's shared /etc files. "Already gone" is success (False); raises like remove_container_dir."""
    found = False
    for directory in (paths.pod_data_dir(pod_name), os.path.join(paths.pods_dir(), f"{pod_name}.etc")):
        if os.path.lexists(directory):
            tree.remove_tree(directory).check()
            found = True
    return found
