"""The supervisor: daemon.py (the process that watches detached containers and serves DNS), its socket's
protocol.py and connections.py, client.py (the CLI's side), logrelay.py (container output into capped
logs), resolver.py (DNS on user networks), jobs.py (the only doors its forked children use: a contract)."""
