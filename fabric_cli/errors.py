"""The project's exceptions. Library code raises these; the CLI prints one line and exits 1."""


class FabricError(Exception):
    """A failure a user can fix: the message says what failed, what was found, and what to do."""


class InputError(FabricError):
    """A file, argument or piece of data that is not what the command needs."""


class CheckpointError(FabricError):
    """A checkpoint that is missing, malformed, or does not match its tokenizer or config."""


class TrainingError(FabricError):
    """Training cannot go on (a non-finite loss, out of memory)."""


class FabricWarning(UserWarning):
    """Something the user should know that stops nothing (the CLI prints it as one line)."""
