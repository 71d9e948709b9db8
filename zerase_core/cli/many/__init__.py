"""`erase-many`: a list of erasures, one process or many under torchrun (docs/distributed.md): the command, one
entry's run, the status files and the summary."""
