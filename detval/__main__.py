import sys

from detval.cli import main

if __name__ == "__main__":  # spawned ranks re-import __main__: they must not run the CLI again
    sys.exit(main())
