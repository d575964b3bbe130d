"""minirun's bridge networking as a CNI plugin (`minirun-cni`), for cnitool, Podman, containerd and kubelet.

Layers: `protocol` (the wire: environment, stdin, versions, result and error JSON), `config` (the network
configuration validated into minirun's `Network` and options), `store` (per-attachment records and the
network's lock under the data dir), `plugin` (ADD/DEL/CHECK/GC/STATUS over minirun's net code), `main` (the
entry point). Kept free of typer and of pyroute2's package import so that a runtime's exec stays cheap.
"""
