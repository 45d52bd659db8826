"""Random-word descriptions: the `random_text` control of J_reg's target (lmmreg.reg_targets; WaffleCLIP's control,
Roth et al., ICCV 2023). Stage `embed_text` writes their embeddings; kept apart from the training code so the
text stages do not depend on it."""

from __future__ import annotations

import torch


def random_words(word_counts: list[int], vocab: list[str], *, seed: int) -> list[str]:
    """One random-word text per entry, each with that many words drawn uniformly from `vocab` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(vocab), (sum(word_counts),), generator=g).tolist()
    out, k = [], 0
    for n in word_counts:
        out.append(" ".join(vocab[i] for i in idx[k:k + n]))
        k += n
    return out


def word_vocabulary() -> list[str]:
    """Whole English-like words of CLIP's BPE vocabulary (ASCII letters, at least 3 long), sorted: the random-word
    control's dictionary, independent of the model's own tokenizer (its words are re-tokenized by the model)."""
    from open_clip.tokenizer import SimpleTokenizer

    return sorted(k[:-4] for k in SimpleTokenizer().encoder
                  if k.endswith("</w>") and k[:-4].isalpha() and k[:-4].isascii() and len(k) >= 7)
