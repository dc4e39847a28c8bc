"""A character-level language model on generated text: a word-bigram "language" and a small GRU.

The text is drawn from a fixed random language (seeded): 48 words of 2-7 letters over a
16-letter alphabet; each word is followed by one of 4 successors (probabilities drawn from a
Dirichlet), a sentence ends after a word with probability 0.15 (". "), words are separated by
spaces. A model has to learn the spelling of the words (deterministic once a word has begun) and
which words follow which (the only uncertainty), so the loss has a floor well above zero and a
unigram model (the "chance" of this task) is far above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LETTERS = "abcdefghijklmnop"
ALPHABET = LETTERS + " ."
N_WORDS = 48
SUCCESSORS = 4
SENTENCE_END = 0.15


@dataclass
class CharData:
    """Generated text as int64 character codes (``ALPHABET``), split into train and test."""

    train: torch.Tensor
    test: torch.Tensor
    alphabet: str = ALPHABET

    @property
    def vocab(self) -> int:
        return len(self.alphabet)


def make_char_text(seed: int = 0, n_train: int = 10_000, n_test: int = 4_000) -> CharData:
    """Draw ``n_train + n_test`` characters of the seeded language (the language depends only on
    ``seed``; the test text continues the train text)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 8, (N_WORDS,), generator=g)
    words = ["".join(LETTERS[int(i)] for i in torch.randint(0, len(LETTERS), (int(n),), generator=g))
             for n in lengths]
    successors = torch.stack([torch.randperm(N_WORDS, generator=g)[:SUCCESSORS] for _ in range(N_WORDS)])
    weights = torch.distributions.Gamma(torch.full((N_WORDS, SUCCESSORS), 0.5), 1.0)
    torch.manual_seed(seed)  # the Gamma sampler draws from the global generator
    probs = weights.sample()
    probs = probs / probs.sum(1, keepdim=True)
    out: list[str] = []
    size = 0
    word = int(torch.randint(0, N_WORDS, (1,), generator=g))
    while size < n_train + n_test:
        text = words[word]
        if float(torch.rand(1, generator=g)) < SENTENCE_END:
            text += ". "
            word = int(torch.randint(0, N_WORDS, (1,), generator=g))
        else:
            text += " "
            word = int(successors[word, int(torch.multinomial(probs[word], 1, generator=g))])
        out.append(text)
        size += len(text)
    codes = torch.tensor([ALPHABET.index(c) for c in "".join(out)[: n_train + n_test]], dtype=torch.int64)
    return CharData(codes[:n_train], codes[n_train:])


class CharGRU(nn.Module):
    """Embedding -> one GRU layer -> linear read-out; logits flattened to (batch * time, vocab)."""

    def __init__(self, vocab: int = len(ALPHABET), embed: int = 16, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, time) codes -> logits (batch * time, vocab)."""
        out, _ = self.gru(self.embed(x))
        return self.head(out).flatten(0, 1)
