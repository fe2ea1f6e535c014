"""The second and third stages: features to embeddings. The two-tower model (``model``), its
contrastive and self-supervised losses (``losses``), the converter batch sampler (``sampler``),
feature corruption for augmented views (``augment``), training as one typed function (``train``)
with held-out converter recall for model selection (``heldout``) and collapse checks (``health``),
and embedding the whole population (``embed``).
"""
