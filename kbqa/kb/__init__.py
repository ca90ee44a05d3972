"""kbqa.kb."""
