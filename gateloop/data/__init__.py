"""Data: the Memory Horizon task (paper Appendix A, ``memory_horizon``) and the language-modelling
pipeline: corpus readers (``corpora``), pinned registry downloads (``sources``), tokenizers
(``tokenizers``) and token shards with ``meta.json`` (``prepare``)."""
