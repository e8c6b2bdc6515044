"""The Jinja2 templates of the Markdown report, shipped inside the package as data."""
