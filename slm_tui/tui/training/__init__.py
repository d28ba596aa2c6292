"""The TUI's training feature: the Train screen (Ctrl+T, `slm-tui --watch RUN_DIR`) and
what it stands on.

- `screen`: the Train screen (chart, figures, samples; start, stop, resume, write, compare).
- `form`: the start form (`n`); `quit_dialog`: the question Ctrl+Q asks while a run started
  here trains.
- `chart`, `stats`, `samples`: the screen's three widgets.
- `state`: the app's side of training (`Training`: the watched run folder, the process
  started here), kept by the app so it outlives the screen.
- `process`: `slm-train model` as a child process (start, SIGTERM, resume, its refusal).
- `watch`: a run's metrics.jsonl tailed and folded into typed records (torch-free).
- `cpu_share`: one thread for the app's own generation while a local run trains.
"""
