"""Which new passwords are accepted: NIST SP 800-63B, section 3.1.1.2 ("memorized secrets").

At least 12 characters, any characters, no composition rules; refused if it is a commonly
used, expected or breached value: zxcvbn (Dropbox's estimator, shipped with its lists of
the most common passwords from breach corpora, English words, names, keyboard patterns,
repeats and sequences) must rate it at least "safely unguessable" against a slow-hash
attacker (score 3, about 10^8 guesses or more), taking the person's own names and the
product's as known to the attacker. Reuse of the last few passwords is the directory
service's check (it needs the stored hashes).
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_LENGTH = 12
MAX_LENGTH = 1024  # as the API's schema says; a longer one is refused, never cut
MIN_SCORE = 3
_ESTIMATED = 72  # zxcvbn rates at most this many characters; a longer one is rated by its start
_PRODUCT_WORDS = ("trialledger", "trial", "ledger", "clinical")


def password_problem(password: str, known_words: Iterable[str] = ()) -> str | None:
    """Why ``password`` may not be set, or None if it may.

    ``known_words``: what an attacker knows of the person (username, full name).
    """
    if len(password) < MIN_LENGTH:
        return f"must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must have at most {MAX_LENGTH} characters"
    # Imported when first needed: zxcvbn's lists weigh some 13 MB in every process that
    # imports the runtime (an export's among them), which mostly never rates a password.
    from zxcvbn import zxcvbn

    words = [w for text in known_words for w in text.replace("-", " ").split() if w]
    rating = zxcvbn(password[:_ESTIMATED], user_inputs=[*words, *_PRODUCT_WORDS])
    if int(rating["score"]) >= MIN_SCORE:
        return None
    warning = str(rating["feedback"].get("warning") or "").rstrip(".")
    why = warning or "a common password, word, name or pattern"
    return (f"is too easy to guess ({why[0].lower() + why[1:]}); a longer phrase of "
            f"unrelated words is both easier to remember and harder to guess")
