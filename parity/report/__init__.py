"""What a run shows: console lines, JSON dumps, the markdown report, figures and minimal reproductions."""
