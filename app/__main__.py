import sys

from app.entrypoints.cli import main

sys.exit(main())
