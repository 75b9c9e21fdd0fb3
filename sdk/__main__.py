"""``python -m edgepack``: the same as the ``edgepack`` command."""

from edgepack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
