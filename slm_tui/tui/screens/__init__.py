"""The TUI's screens: the writing view (`write`, the app's default screen) and the ones
opened over it: help, checkpoint picker, export, compare. The Train screen is in
`slm_tui/tui/training/`."""
