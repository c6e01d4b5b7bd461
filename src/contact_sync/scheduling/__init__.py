"""Who may be called now: the calling policy, the rules that always hold, eligibility."""
