"""`RunRefused`: the base of every error that stops a command for a reason its message explains
(a config that differs from the run's, a workdir in use, checkpoints of another config, a sweep
point asked to take foreign results). `launch.py` prints the message and exits with status 2,
without a traceback. Kept free of heavy imports so every mode can catch it cheaply."""


class RunRefused(Exception):
    """A command refused with an explanation; launch.py exits 2."""
