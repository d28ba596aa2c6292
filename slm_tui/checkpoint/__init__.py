"""The checkpoint format, in one package: a self-contained directory that every stage after
`slm-train model` reads (docs/formats.md).

- `format`: the directory itself, torch-free: file names, `config.yaml` and `meta.json`
  read and checked, the safetensors header checked without loading it, `CheckpointInfo`
  for pickers and cards, discovery (`list_checkpoints`, `resolve_checkpoint`, the bundled
  demo), and `record_evaluation` (`slm-train eval --record`).
- `records`: the held-out evaluations recorded in meta.json (`RecordedEval`) and the one line
  the TUI shows of them, torch-free.
- `lock`: the folder lock that makes loads, records and saves of one folder take turns.
- `io`: save (atomic, fsynced) and load (validated, checksummed) with torch; re-exports the
  `format` names a caller of both needs.

Importing the package imports none of them: the TUI reads `format` and `records` without
torch.
"""
