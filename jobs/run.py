"""spark-submit entry point: run the stages of a config (all it supports, or ``--stages a,b``).

    ./spark-submit.sh --master local[2] jobs/run.py --config conf/tiktok_users.yaml --run-id r1

Takes the arguments of ``seglake run``; the session is the one spark-submit started.
"""

import sys

from seglake.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
