"""Failures of other libraries (hub downloads, torch.load, SentencePiece, wandb) reported as one line."""


def one_line(err, limit=300):
    """'TypeName: message', the message's whitespace folded to single spaces and cut at `limit` characters."""
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(err).__name__}: {text}"
