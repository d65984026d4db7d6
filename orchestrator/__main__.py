"""`python -m orchestrator ...` is the same as the `orchestrator` console script."""
import sys

from orchestrator.cli import main

sys.exit(main())
