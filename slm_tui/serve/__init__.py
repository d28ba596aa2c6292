"""`slm-serve`: an OpenAI-compatible text-generation server with continuous batching.

- `scheduler`: the engine loop: one thread owns the model; every step decodes all active
  request rows as one batch; rows join at step boundaries and leave as soon as they end.
- `protocol`: the request shapes (pydantic) and how they become sampling settings.
- `app`: the FastAPI app: endpoints, OpenAI-shaped errors, server-sent events, the API key,
  the body limit, metrics.

The server stack (FastAPI, uvicorn) is the `serve` extra, imported only here and by
`slm_tui.cli.serve`.
"""
