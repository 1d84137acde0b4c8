"""The kernel: records, base classes, the plugin manager, catalog and registry of cards, defaults."""
