"""Tables (markdown), mean +- std over seeds, and plots."""

from .tables import markdown_table, mean_std, learnability_ratio

__all__ = ["markdown_table", "mean_std", "learnability_ratio"]
