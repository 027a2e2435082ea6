"""Built-in templates and an example config, read through importlib.resources."""
