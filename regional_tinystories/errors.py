"""Errors as one line: the input-error type every stage raises for bad user input, and one_line() for folding the
failures of other libraries (hub downloads, torch.load, SentencePiece, wandb) into a single line."""

from dataclasses import dataclass


def one_line(err, limit=300):
    """'TypeName: message', the message's whitespace folded to single spaces and cut at `limit` characters."""
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(err).__name__}: {text}"


class InputError(ValueError):
    """A file or setting the user gave us is missing or malformed. The message is one line that starts with where
    (file:line, file[index], or the setting's name) and says what is wrong."""


@dataclass(frozen=True)
class Problem:
    """One thing a check found wrong. fatal: the file cannot be used at all (missing, unreadable, wrong size), so
    checks that need to read it must not run."""
    where: str
    message: str
    fatal: bool = False

    def __str__(self):
        return f"{self.where}: {self.message}"
