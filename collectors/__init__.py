"""Evidence sources beside the benchmark: the environment now; cgroup, NVML, Kubernetes, Prometheus later."""
