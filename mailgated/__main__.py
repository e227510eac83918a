"""`python -m mailgated` is the same as the `mailgated` script."""

from mailgated.cli import main

if __name__ == "__main__":
    main()
