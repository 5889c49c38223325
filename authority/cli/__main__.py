"""``python -m authority.cli``: the same as the ``authority`` console script."""

from authority.cli.dispatch import main

if __name__ == "__main__":
    raise SystemExit(main())
