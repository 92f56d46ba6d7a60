"""etcd-config-dispenser: project an etcd prefix into a directory atomically and signal a child."""
