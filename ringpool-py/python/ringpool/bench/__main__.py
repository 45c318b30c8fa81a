"""python -m ringpool.bench load --dir DIR [--size 4G] [--rounds 3] [--json]"""

import sys

from ringpool.bench.load import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
