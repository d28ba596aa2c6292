"""Token bytes -> text deltas that are always whole UTF-8 characters, with stop strings.

The engine speaks token ids; `TextStream` turns each id's exact bytes
(`tokenizer.token_bytes(id)`) into text through an incremental UTF-8 decoder, so a character
split over several byte-fallback tokens (an emoji is four `<0xNN>` pieces) is held until its
last byte arrives. Invalid byte sequences become U+FFFD, as `bytes.decode(errors="replace")`
would make them.

Stop strings may span tokens ("The" + " End"): text that could still be the start of a stop
string is held back, never emitted and then taken back. When a stop string completes, the
text before it is emitted and the stream reports `stopped`.
"""

from __future__ import annotations

import codecs


class TextStream:
    """Incremental detokenizer for one story. `push` returns what is safe to show now."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text that might be the start of a stop string
        self.stopped = False
        self.stop_string: str | None = None

    def push(self, data: bytes, stops: tuple[str, ...] = ()) -> str:
        """Feed one token's bytes; return the newly safe text (may be "")."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(data)
        if not stops:
            self._held = ""
            return text
        first, which = -1, None
        for s in stops:
            at = text.find(s)
            if at >= 0 and (first < 0 or at < first):
                first, which = at, s
        if which is not None:
            self._held = ""
            self.stopped, self.stop_string = True, which
            return text[:first]
        hold = _partial_stop_suffix(text, stops)
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The story ended without a stop string: release held text and any dangling bytes."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text


def _partial_stop_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
