"""spark-submit entry point: score new events or entity rows with a trained run.

    ./spark-submit.sh --master local[2] jobs/score.py --config conf/tiktok_users.yaml \
        --model-run r1 --input data/new/events --run-id s1 --fail-on-drift

Takes the arguments of ``seglake score``; exits 2 on a user error, 3 when ``--fail-on-drift`` is given
and a feature's drift is flagged.
"""

import sys

from seglake.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
