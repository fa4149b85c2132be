"""OpenAI-compatible request checks and deterministic responses (no inference happens).

Every output is derived from a hash of the request's content, the serving model and a salt (the sandbox seed
and the model id), so the same request always gets the same answer and tests can pin exact values. One word of
generated text counts as one completion token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from capella_deploy.sandbox.errors import ServiceError

DEFAULT_MAX_TOKENS = 512
ROLES = ("system", "developer", "user", "assistant", "tool")
_VOCABULARY = (
    "Couchbase keeps JSON documents in buckets, scopes and collections, and answers SQL++ queries over them "
    "with indexes that stay in memory; vector search ranks documents by similarity while the data service "
    "replicates every change across nodes so applications read their own writes quickly and scale out "
    "without downtime"
)
_WORDS = _VOCABULARY.split()
_UNSAFE = {
    "violence": ("kill", "attack", "weapon", "bomb", "shoot"),
    "illicit": ("drug", "trafficking", "smuggle", "steal", "fraud"),
    "self-harm": ("suicide", "self-harm"),
    "hate": ("hate",),
}
_JAILBREAK = ("ignore previous instructions", "ignore all previous", "jailbreak", "developer mode")


def bad(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(400, message, "invalid_request_error" if param is None else "invalid_value", param)


def count_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(_digest(*parts)[:8], "big"))


def response_id(prefix: str, *parts: object) -> str:
    return prefix + _digest(*parts).hex()[:32]


def _number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(f"{key} must be a number between {low} and {high}; got {value!r}", key)


def _integer(body: dict[str, Any], key: str, low: int, high: int, default: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{key} must be an integer between {low} and {high}; got {value!r}", key)
    return value


def requested_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required: the name of the model to use", "model")
    return model


@dataclass(frozen=True)
class Generation:
    """What one request asks to generate, after validation."""

    prompts: tuple[str, ...]  # one per choice group: the chat transcript, or each completion prompt
    max_tokens: int
    n: int
    stream: bool
    include_usage: bool
    seed: int | None
    prompt_tokens: int


def _common(body: dict[str, Any], prompts: tuple[str, ...], prompt_tokens: int) -> Generation:
    for key, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("frequency_penalty", -2, 2),
        ("presence_penalty", -2, 2),
    ):
        _number(body, key, low, high)
    max_tokens = _integer(body, "max_tokens", 1, 1_000_000, DEFAULT_MAX_TOKENS)
    max_tokens = _integer(body, "max_completion_tokens", 1, 1_000_000, max_tokens)
    n = _integer(body, "n", 1, 128, 1)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("seed must be an integer", "seed")
    return Generation(prompts, max_tokens, n, stream, bool(options.get("include_usage")), seed, prompt_tokens)


def _message_text(message: Any, index: int) -> str:
    if not isinstance(message, dict):
        raise bad(f"messages[{index}] must be an object", "messages")
    role = message.get("role")
    if role not in ROLES:
        raise bad(f"messages[{index}].role must be one of {', '.join(ROLES)}; got {role!r}", "messages")
    content = message.get("content")
    if content is None and role in ("assistant", "tool"):
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise bad(f"messages[{index}].content must be a string or a list of content parts", "messages")


def parse_chat(body: dict[str, Any]) -> Generation:
    requested_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    texts = [_message_text(m, i) for i, m in enumerate(messages)]
    transcript = "\n".join(f"{m['role']}: {t}" for m, t in zip(messages, texts, strict=True))
    return _common(body, (transcript,), sum(count_tokens(t) + 4 for t in texts))


def parse_completion(body: dict[str, Any]) -> Generation:
    requested_model(body)
    prompt = body.get("prompt", "<|endoftext|>")
    if isinstance(prompt, str):
        prompts: list[str] = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompts = [" ".join(str(p) for p in prompt)]
    else:
        raise bad("prompt must be a string, a list of strings or a list of token ids", "prompt")
    return _common(body, tuple(prompts), sum(count_tokens(p) for p in prompts))


def generated_words(salt: str, model: str, prompt: str, choice: int, gen: Generation) -> tuple[list[str], str]:
    """The words of one choice, and its finish reason."""
    rng = _rng(salt, model, prompt, choice, gen.seed)
    natural = rng.randint(12, 40)
    count = min(natural, gen.max_tokens)
    words = [rng.choice(_WORDS) for _ in range(count)]
    words[0] = words[0][:1].upper() + words[0][1:]
    if count == natural:
        words[-1] = words[-1].rstrip(",;") + "."
        return words, "stop"
    return words, "length"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Choice:
    index: int
    words: list[str]
    finish_reason: str


def choices(salt: str, model: str, gen: Generation) -> list[Choice]:
    result = []
    for p, prompt in enumerate(gen.prompts):
        for c in range(gen.n):
            words, finish = generated_words(salt, model, prompt, c, gen)
            result.append(Choice(p * gen.n + c, words, finish))
    return result


def chat_response(response_id: str, model: str, created: int, gen: Generation, picked: list[Choice]) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": " ".join(c.words)},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for c in picked
        ],
        "usage": _usage(gen.prompt_tokens, sum(len(c.words) for c in picked)),
        "prompt_logprobs": None,
    }


def chat_stream(response_id: str, model: str, created: int, gen: Generation, picked: list[Choice]) -> Iterator[str]:
    """Server-sent events: a role delta, one delta per word, a finish chunk per choice, then [DONE]."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def delta(index: int, content: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish}

    for c in picked:
        yield chunk([delta(c.index, {"role": "assistant", "content": ""})])
        for i, word in enumerate(c.words):
            yield chunk([delta(c.index, {"content": word if i == 0 else " " + word})])
        yield chunk([delta(c.index, {}, c.finish_reason)])
    if gen.include_usage:
        yield chunk([], usage=_usage(gen.prompt_tokens, sum(len(c.words) for c in picked)))
    yield "data: [DONE]\n\n"


def completion_response(
    response_id: str, model: str, created: int, gen: Generation, picked: list[Choice], echo: bool
) -> dict[str, Any]:
    def text(c: Choice) -> str:
        generated = " ".join(c.words)
        return gen.prompts[c.index // gen.n] + generated if echo else generated

    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": c.index, "text": text(c), "logprobs": None, "finish_reason": c.finish_reason} for c in picked
        ],
        "usage": _usage(gen.prompt_tokens, sum(len(c.words) for c in picked)),
        "system_fingerprint": "capella-sandbox",
    }


def completion_stream(
    response_id: str, model: str, created: int, gen: Generation, picked: list[Choice]
) -> Iterator[str]:
    def chunk(index: int, text: str, finish: str | None) -> str:
        body = {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    for c in picked:
        for i, word in enumerate(c.words):
            yield chunk(c.index, word if i == 0 else " " + word, None)
        yield chunk(c.index, "", c.finish_reason)
    yield "data: [DONE]\n\n"


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    requested_model(body)
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw):
        items = [" ".join(str(i) for i in raw)]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise bad("input must be a non-empty string or list", "input")
    texts = []
    for item in items:
        if isinstance(item, list) and item and all(isinstance(i, int) for i in item):
            item = " ".join(str(i) for i in item)
        if not isinstance(item, str) or not item:
            raise bad("input must not contain empty strings; each item is a string or a list of token ids", "input")
        texts.append(item)
    input_type = body.get("input_type")
    if input_type is not None and input_type not in ("query", "passage"):
        raise bad("input_type must be query or passage", "input_type")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise bad("encoding_format must be float or base64", "encoding_format")
    return texts


def embedding_vector(salt: str, model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector determined by the text: equal texts embed equally, different ones almost never do."""
    rng = _rng(salt, model, text)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings_response(
    response_id: str, model: str, created: int, vectors: list[list[float]], texts: list[str], base64_format: bool
) -> dict[str, Any]:
    def encode(vector: list[float]) -> Any:
        if not base64_format:
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()

    tokens = sum(count_tokens(t) for t in texts)
    return {
        "id": response_id,
        "object": "list",
        "created": created,
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def moderation_response(text: str, kind: str) -> dict[str, Any]:
    """The documented flat moderation shape; flags text holding an obviously unsafe word or a jailbreak phrase."""
    lowered = text.lower()
    if kind == "prompt-injection":
        hits = {"jailbreak": any(p in lowered for p in _JAILBREAK)}
    else:
        hits = {cat: any(w in lowered for w in words) for cat, words in _UNSAFE.items()}
    return {
        "flagged": any(hits.values()),
        "categories": hits,
        "category_scores": {cat: 0.97 if hit else 0.01 for cat, hit in hits.items()},
        "category_applied_input_types": {cat: ["text"] for cat in hits},
    }
