"""The hub: the one long-lived process that runs agents, keeps state and serves the API."""
