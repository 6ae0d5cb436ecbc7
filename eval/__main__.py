import sys

from eval.run_eval import main

sys.exit(main())
