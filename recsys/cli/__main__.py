"""`python -m recsys.cli ...` runs the `recsys` command (what the tests start as a real process)."""

from recsys.cli.entry import main

main()
