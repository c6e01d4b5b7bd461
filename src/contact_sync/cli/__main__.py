"""``python -m contact_sync.cli``: the same as the ``contact-sync`` command."""

import sys

from contact_sync.cli.main import main

sys.exit(main())
