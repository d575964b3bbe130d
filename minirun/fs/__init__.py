"""Filesystems for containers: the image store, the layer applier and the importers that feed it."""
