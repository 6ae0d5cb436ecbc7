import sys

from sgl_specreason.eval.serve_load.command import main

sys.exit(main())
