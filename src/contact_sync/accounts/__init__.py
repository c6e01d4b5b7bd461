"""Teams and their API keys: who may act on which team's data."""
