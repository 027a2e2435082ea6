"""Model calls: the seam between agents and litellm (tags, keys and budgets grow here)."""
