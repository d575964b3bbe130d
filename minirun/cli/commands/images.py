"""`minirun image ...`: build, import, ls, inspect, rm."""

from __future__ import annotations

import json

import typer

from minirun.cli import render
from minirun.cli.commands import group
from minirun.cli.managed import each, managed
from minirun.cli.options import DEBUG

app = group("Images: root filesystems built from a recipe or imported from 'docker save' and OCI archives.")


@app.command("build")
def image_build_cmd(
    recipe: str = typer.Argument(..., metavar="DIR|NAME"),
    tag: str = typer.Option(None, "-t", "--tag", help="store it as NAME[:TAG] (default: the recipe's name)"),
    debug: bool = DEBUG,
) -> None:
    """Build an image from a recipe directory (image.toml + rootfs/) or a shipped recipe's name."""
    from minirun.runtime import image_admin

    image = managed(lambda: image_admin.build(recipe, tag), debug)
    typer.echo(f"sha256:{image.id} {image.name}")


@app.command("import")
def image_import_cmd(
    source: str = typer.Argument(..., metavar="FILE|-"),
    name: str = typer.Option(None, "--name", help="store it as NAME[:TAG] (default: the name the archive gives)"),
    debug: bool = DEBUG,
) -> None:
    """Import a 'docker save' tarball or an OCI image layout (directory or tar); - reads stdin."""
    from minirun.runtime import image_admin

    image, devices = managed(lambda: image_admin.import_archive(source, name), debug)
    if devices:
        typer.echo(f"minirun: note: skipped {devices} device node(s): a container gets its own /dev", err=True)
    typer.echo(f"sha256:{image.id} {image.name}")


@app.command("ls")
def image_ls_cmd(fmt: str = typer.Option("table", "--format", help="table or json"), debug: bool = DEBUG) -> None:
    """List images: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE."""
    import datetime

    from minirun.runtime import image_admin

    if fmt not in ("table", "json"):
        render.unknown_format(fmt, "use table or json", debug)
    rows = managed(image_admin.rows, debug)
    now = datetime.datetime.now(datetime.UTC)
    render.listing(
        fmt,
        rows,
        ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
        lambda r: (r["Repository"], r["Tag"], r["ID"], render.ago(r["CreatedAt"], now), render.human_size(r["Size"])),
    )


@app.command("inspect")
def image_inspect_cmd(refs: list[str] = typer.Argument(..., metavar="IMAGE..."), debug: bool = DEBUG) -> None:
    """Show images as JSON, in Docker's shape (Id, RepoTags, Created, Size, Config, RootFS)."""
    from minirun.runtime import image_admin

    typer.echo(json.dumps(managed(lambda: [image_admin.inspect(ref) for ref in refs], debug), indent=4))


@app.command("rm")
def image_rm_cmd(refs: list[str] = typer.Argument(..., metavar="IMAGE..."), debug: bool = DEBUG) -> None:
    """Remove images: untag NAME (deleting the image with its last tag), or delete an ID and all its tags."""
    from minirun.runtime import image_admin

    each(refs, image_admin.remove, debug, full=True)
