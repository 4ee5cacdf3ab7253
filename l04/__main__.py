import sys

from l04.cli import main

sys.exit(main())
