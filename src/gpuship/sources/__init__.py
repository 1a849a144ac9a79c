"""Sources: things that produce layers (Debian packages, Python wheels, project files, registry bases)."""
