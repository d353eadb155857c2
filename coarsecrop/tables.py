"""``python -m coarsecrop.tables export ...``: an alias of ``coarsecrop tables export ...`` (the chapters'
code is in ``coarsecrop.studies``)."""

import sys

from coarsecrop.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["tables", *sys.argv[1:]]))
