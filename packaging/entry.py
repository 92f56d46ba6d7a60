"""Entry point of the single-file executable that scripts/build-binary makes with PyInstaller."""

from projector.cli import main

main()
