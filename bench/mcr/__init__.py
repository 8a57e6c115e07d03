"""MCR-Bench: the mission-critical reproducibility benchmark of the HEAL paper (arXiv 2606.21023)."""
