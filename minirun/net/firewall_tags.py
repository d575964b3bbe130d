"""Kept importable for runtime callers not yet ported (issue 14): the names live in net/firewall/tags.py."""

from minirun.net.firewall.tags import *  # noqa: F403
