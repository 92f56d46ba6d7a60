"""The wiring: every part of one run made and handed to the parts that use it, in one function.

The CLI calls ``assemble`` once its input is valid; nothing else constructs the parts, so this is the
one page that shows what a run is made of (data flows etcd -> source -> dispenser -> projection ->
target, and the dispenser tells the supervisor's command).
"""

from __future__ import annotations

from .dispenser import Dispenser
from .hooks import Hooks
from .metrics import Metrics
from .notify import Notifier
from .projection import Projection
from .settings import EtcdConfig, Options, child_environment
from .source import Source
from .supervisor import Supervisor


def assemble(options: Options, etcd: EtcdConfig, metrics: Metrics, notifier: Notifier) -> Dispenser:
    environment = child_environment()  # for the command and the hooks: no etcd secret in it
    hooks = Hooks(options.check, options.on_change, environment, metrics)
    supervisor = None
    if options.command:
        supervisor = Supervisor(
            options.command,
            environment,
            options.signal,
            options.restart,
            options.stop_timeout,
            metrics,
            options.start_grace,
        )
    projection = Projection(options, hooks, metrics)
    prefixes = tuple(mount.prefix for mount in options.prefix)
    source = Source(etcd, prefixes, metrics, options.confirm_interval)
    return Dispenser(options, projection, source, supervisor, metrics, notifier)
