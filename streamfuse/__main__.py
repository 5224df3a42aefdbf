"""`python -m streamfuse ...` is the same as the `streamfuse` command."""
import sys

from streamfuse.cli import main

sys.exit(main())
