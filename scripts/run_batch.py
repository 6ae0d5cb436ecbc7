"""Offline batch generation: JSONL problems in, one JSON line per problem out, resumable.

    python scripts/run_batch.py --input problems.jsonl --output results.jsonl --parallel 8 \\
        --draft-url http://gpu0:30000 --base-url http://gpu1:30000

The same as ``sgl-specreason batch``; ``--help`` lists every setting.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgl_specreason.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["batch", *sys.argv[1:]]))
