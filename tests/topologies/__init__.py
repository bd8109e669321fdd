"""Redis Cluster, Sentinel and TLS, Galera, and several instances, run locally."""
