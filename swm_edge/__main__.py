"""``python -m swm_edge`` is the ``swm-edge`` command."""

from swm_edge.cli import main

main()
