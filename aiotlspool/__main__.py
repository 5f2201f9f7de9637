"""``python -m aiotlspool``: the same command line as the ``aiotlspool`` script."""

from .cli import main

raise SystemExit(main())
