"""Container networking: links, addresses, routes (netlink), IPAM, firewall, and the attach plan."""
