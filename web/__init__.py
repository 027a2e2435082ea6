"""The HTML frontend served by the hub; no build step."""
