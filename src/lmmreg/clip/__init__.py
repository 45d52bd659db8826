"""CLIP through open_clip, one concern per module, each importable alone (shaped like open_clip's own split):

- `arch`: the open_clip architectures (the project's own registered) and `clip.model` checked against
  `clip.pretrained`;
- `weights`: where the weights come from, found before any work is done (offline too), and the sidecar that says
  what a saved checkpoint was trained as;
- `build`: the model, its transforms and its description for an artifact's metadata;
- `precision`: the autocast context inference runs under;
- `text`: tokenizing and encoding text fast;
- `vision`: the image features cached at the trainable boundary, and the trainable tail that continues from them.

The boundary follows open_clip's `lock_image_tower(unlocked_groups=g)`:
  g = 1: only `visual.proj` trains. Cache: the pooled `ln_post` class token, [N, width].
  g = 2: the last residual block and `ln_post` train too. Cache: tokens entering the last block, [N, T, width].
`VisionTail(g)` applied to the cache equals the rest of `model.visual` (tests/test_equivalence.py proves
logits and gradients). Text is encoded sorted by length and padded only to the longest text of each batch,
which equals 77-token padding for CLIP's causal text tower (tests/test_clip_text.py proves it).

open_clip is imported inside the functions that use it: it brings transformers, timm and torchvision, which a
process that never builds a CLIP need not pay for. This file imports no module, so a stage depends only on the
modules it names.
"""
