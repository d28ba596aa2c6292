"""The OpenAI request shapes the server accepts, and how they become sampling settings.

Request bodies are pydantic models (types checked there: a boolean is never taken for a
number, and only true and false are booleans); every sampling value is then checked by the
engine's own rules (`SamplingSettings`), so the server refuses exactly what `slm-generate`
refuses, as a 400 naming the parameter. Text that is not Unicode (a lone surrogate) is a
400 naming where it is. Unknown fields are ignored (as llama.cpp's and vLLM's servers do),
except OpenAI fields whose meaning we cannot honour.

Sampling fields: OpenAI's `temperature`, `top_p`, `seed`, `stop`, `max_tokens`
(`max_completion_tokens` in chat), plus what llama.cpp and vLLM accept: `top_k`, `min_p`,
`repetition_penalty` (llama.cpp: `repeat_penalty`), `repeat_last_n` (the penalty's
look-back window) and `ignore_eos`. An omitted field takes the engine's default (README
"Sampling defaults"); `max_tokens` defaults to 256.

Briefs: `brief` (both endpoints; `extra_body={"brief": {...}}` in the openai client) is an
object `{"words": [...], "name": "...", "features": [...]}` (`briefs.Brief`: a 400 naming
`brief` when it is not one); its block goes before the prompt and the reply is the story.

Chat: the model writes stories and follows no instructions, so `messages` become one story
prompt: system messages are dropped, and the user and assistant messages are joined in
order with a newline (as paragraphs of one story). The reply continues that story. Except
when the last message is the user's and asks for a story ("a story about a dragon named Max
who finds a cake": `briefing.request_brief`, judged on its first sentence) and names
something a brief holds (content words, a name, feature words): then the reply is a new
story written from that brief alone, with no seed text (the request is not story text: as a
prompt, the model would continue "a story about a dragon..." as prose). A request that
names nothing usable ("tell me a story") keeps the plain behaviour; a request body with its
own `brief` takes the messages as the story so far, like `/v1/completions`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from slm_tui.briefing import request_brief
from slm_tui.briefs import Brief
from slm_tui.errors import GenerationError
from slm_tui.generation.settings import DEFAULTS, SamplingSettings

DEFAULT_MAX_TOKENS = 256
MAX_N = 16  # choices per request
MAX_TOP_LOGPROBS = 20

# Our setting name -> the request field to blame in an error.
PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "repetition_window": "repeat_last_n",
    "max_new_tokens": "max_tokens",
    "seed": "seed",
    "stop": "stop",
}


def _not_bool(value: Any) -> Any:
    # JSON's true/false are not 1/0 here (pydantic's lax mode would take them): a boolean in
    # a number's place is a client bug worth a 400, as slm-generate's flags refuse it.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Bool = StrictBool  # true or false only (not "yes", 1 or "on")


class ApiError(Exception):
    """An error the client caused (or a refusal): OpenAI's error shape with this status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def unicode_text(text: str, where: str, param: str) -> str:
    """`text`, refused (400 naming `where`) if it holds a lone surrogate: JSON's "\\ud800"
    decodes to one, and no tokenizer can encode it (it is not Unicode text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400,
            f"{where} holds a lone surrogate (U+{ord(text[exc.start]):04X} at character "
            f"{exc.start}), which is not valid Unicode text",
            param=param,
        ) from None
    return text


class StreamOptions(BaseModel):
    include_usage: Bool = False


class Sampling(BaseModel):
    """The sampling fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")

    model: str
    n: Int = Field(1, ge=1, le=MAX_N)
    temperature: Float | None = None
    top_p: Float | None = None
    top_k: Int | None = None
    min_p: Float | None = None
    repetition_penalty: Float | None = None
    repeat_penalty: Float | None = None  # llama.cpp's name
    repeat_last_n: Int | None = None  # llama.cpp's name for the look-back window
    seed: Int | None = None
    stop: str | list[str] | None = None
    stream: Bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Float | None = None
    frequency_penalty: Float | None = None
    ignore_eos: Bool = False  # vLLM's: write past the end-of-story token, to max_tokens
    brief: dict[str, Any] | None = None  # ours: what the story must contain
    brief_strength: Float | None = None  # ours: the brief guide's strength (0: off)

    def the_brief(self) -> Brief | None:
        """The request's `brief`, validated (a 400 naming `brief`)."""
        if self.brief is None:
            return None
        try:
            return Brief.from_dict(self.brief)
        except GenerationError as exc:
            raise ApiError(400, f"brief: {exc}", param="brief") from None

    def requested_tokens(self) -> int | None:
        return None

    def settings(self, max_tokens_cap: int, vocab_size: int) -> SamplingSettings:
        """The engine settings these fields ask for (seed: the first choice's), checked by the
        engine's rules for a model with `vocab_size` tokens."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(
                    400,
                    f"{name} is not supported; use repetition_penalty",
                    param=name,
                    code="unsupported_parameter",
                )
        if None not in (self.repetition_penalty, self.repeat_penalty) and (
            self.repetition_penalty != self.repeat_penalty
        ):  # clients that speak to several servers send both names, with one value
            raise ApiError(
                400,
                "repetition_penalty and repeat_penalty differ; give one",
                param="repeat_penalty",
            )
        max_tokens = self.requested_tokens()
        if max_tokens is not None and max_tokens > max_tokens_cap:
            raise ApiError(
                400,
                f"max_tokens {max_tokens} is over this server's cap of {max_tokens_cap}",
                param="max_tokens",
            )
        stop = self.stop if self.stop is not None else ()
        if isinstance(stop, list) and len(stop) > 4:
            raise ApiError(400, "at most 4 stop sequences", param="stop")
        changes = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": (
                self.repetition_penalty
                if self.repetition_penalty is not None
                else self.repeat_penalty
            ),
            "repetition_window": self.repeat_last_n,
            "max_new_tokens": (
                max_tokens if max_tokens is not None else min(DEFAULT_MAX_TOKENS, max_tokens_cap)
            ),
            "seed": self.seed,
            "stop": stop,
            "ignore_eos": self.ignore_eos,
            "brief": self.the_brief(),
            "brief_strength": self.brief_strength,
        }
        try:
            chosen = {k: v for k, v in changes.items() if v is not None}
            return DEFAULTS.replace(**chosen).validate(vocab_size)
        except GenerationError as exc:
            message = str(exc)  # "<setting> must be ...": name the request's field instead
            name = message.split(" ", 1)[0]
            param = PARAMS.get(name, name)
            raise ApiError(400, param + message[len(name) :], param=param) from None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: Int | None = None
    logprobs: Int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: Bool = False
    suffix: str | None = None

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str]:
        if self.echo:
            raise ApiError(400, "echo is not supported", param="echo")
        if self.suffix:
            raise ApiError(400, "suffix is not supported", param="suffix")
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise ApiError(400, "prompt is an empty list", param="prompt")
        return prompts


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:  # OpenAI's content parts: only text ones
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, "only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: Int | None = None
    max_completion_tokens: Int | None = None
    logprobs: Bool = False
    top_logprobs: Int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def requested_tokens(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def story_prompt(self) -> str:
        """The story the conversation holds so far (module docstring)."""
        kept = [
            unicode_text(m.text(), f"messages[{i}].content", "messages")
            for i, m in enumerate(self.messages)
            if m.role in ("user", "assistant")
        ]
        if not kept:
            raise ApiError(400, "no user or assistant message to continue", param="messages")
        return "\n".join(kept)

    def requested_brief(self) -> Brief | None:
        """The brief the last message asks for (module docstring); None when the body has its
        own `brief`, the last message is not the user's, or it asks for no usable brief."""
        if self.brief is not None:
            return None
        spoken = [m for m in self.messages if m.role in ("user", "assistant")]
        if not spoken or spoken[-1].role != "user":
            return None
        return request_brief(spoken[-1].text())
