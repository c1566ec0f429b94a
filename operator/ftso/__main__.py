import sys

from ftso.cli import main

sys.exit(main())
