"""Built-in skills (markdown), read through importlib.resources."""
