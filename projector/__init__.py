"""etcd-config-dispenser: project an etcd prefix into a directory atomically and signal a child."""

import os

# gRPC's C core reads this once, when it is imported; left alone it logs every failed TLS handshake at
# INFO on stderr, where our own one line per outage says enough. The child gets the original back.
INHERITED_GRPC_VERBOSITY = os.environ.get("GRPC_VERBOSITY")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
