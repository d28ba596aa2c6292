"""`slm-serve`: an OpenAI-compatible text-generation server with continuous batching.

- `scheduler`: the engine loop: one thread owns the model; every step decodes all active
  request rows as one batch; rows join at step boundaries and leave as soon as they end.
- `engine_process`: the same engine loop in a child process (the default of `slm-serve`):
  the HTTP process and the engine never wait on each other's interpreter lock.
- `protocol`: the request shapes (pydantic) and how they become sampling settings.
- `app`: the FastAPI app: endpoints, OpenAI-shaped errors, metrics.
- `responses`: the OpenAI response shapes built from engine events: server-sent events,
  completion and chat chunks, both logprobs formats.
- `middleware`: the API key and the request counters (`Gatekeeper`), the body's size
  limit and read deadline (`LimitBody`).
- `connections`: below the app: the request head's read deadline, the bound on open
  connections, quiet "out of open files"; `uvicorn_config` runs an app with them.

The server stack (FastAPI, uvicorn) is the `serve` extra, imported only here and by
`slm_tui.cli.serve`.
"""
