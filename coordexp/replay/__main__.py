import sys

from coordexp.replay.cli import main

sys.exit(main())
