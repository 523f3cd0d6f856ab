"""Directions: ``(pos, neg) -> vector`` aggregators and trait vectors from language models
(:mod:`.extract`) and plain torch modules (:mod:`.module_vectors`)."""
