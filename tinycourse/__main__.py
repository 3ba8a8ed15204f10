"""`python -m tinycourse` is the `tinycourse` command."""

import sys

from .cli import main

sys.exit(main())
