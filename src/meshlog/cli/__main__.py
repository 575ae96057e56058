"""``python -m meshlog.cli``: the ``meshlog`` command without its console script."""

from meshlog.cli import main

if __name__ == "__main__":
    main(prog_name="meshlog")
