"""`kurmactl`, the command-line interface. Top layer: it may import anything below.

Start-up time is what a person feels, so subcommand modules are imported only when their
command runs, and nothing heavy is imported at module level here.
"""
