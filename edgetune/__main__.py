"""`python -m edgetune` (how torchrun starts each process)."""

from edgetune.cli import main

main()
