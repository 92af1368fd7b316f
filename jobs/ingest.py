"""spark-submit entry point: ingest raw events of a config into bronze/events and bronze/quarantine.

    ./spark-submit.sh --master spark://host:7077 jobs/ingest.py --config conf/tiktok_users.yaml
"""

import sys

from seglake.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--stages", "ingest", *sys.argv[1:]]))
