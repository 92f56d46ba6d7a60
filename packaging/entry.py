"""Entry point of the one-directory binary that scripts/build-binary makes with PyInstaller.

The executable is also the launcher of the command it supervises (projector/launch.py), recognised by
its first argument before anything else is imported."""

import sys

from projector import launch

if sys.argv[1:2] == [launch.LAUNCH]:
    launch.launch(sys.argv[2:])

from projector.cli import main

main()
