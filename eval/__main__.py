import sys

from sgl_specreason.eval.run_eval import main

sys.exit(main())
