"""The prefix cache: KV of recently read token prefixes in a radix tree, bounded in bytes.

A prompt's key/value tensors depend only on its tokens, so a prompt that starts like one
read before need only be read from where it departs. Like SGLang's RadixAttention, the
tree stores each read prompt's KV along its token path (an edge holds a run of tokens and
their KV, (layers, 2, heads, tokens, head_dim)); `match` finds the longest cached prefix of
a new prompt at token granularity, and `insert` adds what a read prompt had beyond it,
splitting an edge where two prompts part. The prompts a search sends (one long few-shot
header, then each state's own lines) then cost their header once per host.

The tree is bounded by `capacity_bytes`: after each insert, least recently used leaves are
dropped, a token run at a time, until it fits. A node on the path of every recent match is
touched by each of them, so a shared header outlives the branches hanging off it. `match`
returns a copy of the KV, so eviction never pulls tensors from under a running batch.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]  # the run of tokens on the edge from the parent
    kv: torch.Tensor | None  # (layers, 2, heads, len(tokens), head_dim); None at the root
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)  # by first token
    last_used: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token runs."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """KV of token prefixes: `match` the longest cached prefix, `insert` a read prompt."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity must be >= 0 bytes, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._root = _Node((), None, None)
        self._clock = itertools.count(1)
        self.tokens = 0  # cached tokens, over all edges
        self.bytes_per_token = 0  # known from the first insert
        self.evicted_tokens = 0

    @property
    def bytes(self) -> int:
        return self.tokens * self.bytes_per_token

    def clear(self) -> None:
        self._root = _Node((), None, None)
        self.tokens = 0

    def match(self, tokens: Sequence[int]) -> tuple[int, torch.Tensor | None]:
        """(n, KV (layers, 2, heads, n, head_dim)) of the longest cached prefix of `tokens`."""
        stamp = next(self._clock)
        pieces = []
        for node, n in self._walk(tokens):
            node.last_used = stamp
            assert node.kv is not None
            pieces.append(node.kv[:, :, :, :n])
        if not pieces:
            return 0, None
        return sum(p.shape[3] for p in pieces), torch.cat(pieces, dim=3)

    def cached(self, tokens: Sequence[int]) -> int:
        """Length of the longest cached prefix of `tokens` (nothing is touched or copied)."""
        return sum(n for _, n in self._walk(tokens))

    def _walk(self, tokens: Sequence[int]) -> list[tuple[_Node, int]]:
        """The nodes along `tokens`, each with how many of its edge's tokens match."""
        path, node, done = [], self._root, 0
        while done < len(tokens) and (child := node.children.get(tokens[done])) is not None:
            n = common_prefix(child.tokens, tokens[done:])
            path.append((child, n))
            done += n
            if n < len(child.tokens):
                break
            node = child
        return path

    def insert(self, tokens: Sequence[int], kv: torch.Tensor) -> None:
        """Cache `tokens` with their KV (layers, 2, heads, len(tokens), head_dim)."""
        if kv.shape[3] != len(tokens):
            raise ValueError(f"KV covers {kv.shape[3]} tokens, not {len(tokens)}")
        if self.capacity_bytes == 0 or not tokens:
            return
        self.bytes_per_token = kv[:, :, :, :1].numel() * kv.element_size()
        node, done = self._root, 0
        stamp = next(self._clock)
        while done < len(tokens):
            child = node.children.get(tokens[done])
            if child is None:
                leaf = _Node(tuple(tokens[done:]), kv[:, :, :, done:].clone(), node, last_used=stamp)
                node.children[tokens[done]] = leaf
                self.tokens += len(leaf.tokens)
                break
            n = common_prefix(child.tokens, tokens[done:])
            if n < len(child.tokens):
                child = self._split(child, n)
            child.last_used = stamp
            done += n
            node = child
        self._evict()

    def _split(self, node: _Node, n: int) -> _Node:
        """Cut `node`'s edge after `n` tokens; returns the new upper half (its parent now)."""
        assert node.parent is not None and node.kv is not None
        upper = _Node(node.tokens[:n], node.kv[:, :, :, :n].clone(), node.parent,
                      last_used=node.last_used)
        node.parent.children[node.tokens[0]] = upper
        node.tokens, node.kv, node.parent = node.tokens[n:], node.kv[:, :, :, n:].clone(), upper
        upper.children[node.tokens[0]] = node
        return upper

    def _evict(self) -> None:
        """Drop least recently used leaves until the cached KV fits the capacity."""
        if self.bytes <= self.capacity_bytes:
            return
        order = itertools.count()  # breaks ties without comparing nodes
        leaves = [(n.last_used, next(order), n) for n in self._nodes() if not n.children]
        heapq.heapify(leaves)
        while leaves and self.bytes > self.capacity_bytes:
            _, _, leaf = heapq.heappop(leaves)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.tokens -= len(leaf.tokens)
            self.evicted_tokens += len(leaf.tokens)
            if parent is not self._root and not parent.children:
                heapq.heappush(leaves, (parent.last_used, next(order), parent))

    def _nodes(self) -> list[_Node]:
        found, stack = [], list(self._root.children.values())
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(node.children.values())
        return found
