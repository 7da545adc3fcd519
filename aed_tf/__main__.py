"""`python -m aed_tf` is the `aed-tf` command."""

import sys

from aed_tf.cli import main

sys.exit(main())
