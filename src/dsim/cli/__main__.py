import sys

from dsim.cli import main

sys.exit(main())
