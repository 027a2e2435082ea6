"""The HTML frontend served by the hub; no build step: ``index.html`` is the page, ``vendor/`` the
libraries it uses (Markdown and sanitising), copied from npm with their licences."""
