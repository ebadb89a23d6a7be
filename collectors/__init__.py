"""Evidence sources beside the benchmark: environment, cgroup, GPU, Kubernetes, Prometheus (one Evidence type)."""
