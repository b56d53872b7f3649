"""Protocol family (manifest declared in a later step)."""
