"""``python -m projector`` is the console script ``etcd-config-dispenser``."""

from .cli import main

main()
