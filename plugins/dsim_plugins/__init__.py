"""dsim's built-in plugins. Each module is registered through the ``dsim`` entry-point group in
pyproject.toml, exactly as a third-party plugin package registers its own, and imports only
dsim's public API (``import dsim`` / ``from dsim import ...``)."""
