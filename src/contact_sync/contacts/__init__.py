"""The contact and its company: validation, the one writer of contact rows and history, queries."""
