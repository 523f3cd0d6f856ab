"""Model loading: the embedded SmolLM2, Hugging Face ids, GGUF, PEFT adapters, foreign
wrappers (nnsight, TransformerLens) and plain torch modules, all as one ``LoadedModel``."""
