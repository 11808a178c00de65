"""``python -m resnets``: the command line, as the ``resnets`` script runs it."""
import sys

from .cli import main

sys.exit(main())
