import sys

from s2l_jax.cli import main

sys.exit(main())
