import sys

from temporal_executor.cli import main

sys.exit(main())
