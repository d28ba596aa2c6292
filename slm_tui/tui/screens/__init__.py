"""The TUI's secondary screens: help, checkpoint picker, export, compare."""
