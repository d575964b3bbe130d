"""Filesystems for containers. A map, front doors first:

- the image store: images (with image_layout, image_staging, image_names, content_digest), fed by recipe
  (`image build`), imports (`image import`, with import_sources, import_manifests, import_layers) and the
  layer applier every image goes through (archive); space keeps an import within the disk's margin;
- the container's view: rootfs (with host_view, devfs, masks, readonly, mountpoints), its generated /etc
  files (etcfiles) and the user it runs as (users);
- trees a container wrote, removed (tree, protected_entries) and read back (tree_walk) whatever it did.
"""
