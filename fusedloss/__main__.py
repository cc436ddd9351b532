"""``python -m fusedloss``: what runs here (see fusedloss/info.py)."""

import sys

from fusedloss.info import main

sys.exit(main())
