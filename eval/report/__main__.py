import sys

from sgl_specreason.eval.report.command import main

sys.exit(main())
