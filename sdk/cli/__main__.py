"""``python -m edgepack.cli``: the same as the ``edgepack`` command."""

from edgepack.cli import main

raise SystemExit(main())
