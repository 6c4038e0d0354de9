"""`python -m playground`: runs the command line of `playground.cli`, and owns nothing else."""

import sys

from playground.cli import main

sys.exit(main())
