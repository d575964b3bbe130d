"""Containers and pods: their records (model, store), their life (container/, pod, pod_teardown), crash
recovery (reconcile, damaged, rebuild), what the CLI shows (query, doctor, topology), and the supervisor."""
