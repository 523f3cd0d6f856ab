"""What a run asks of a model: chat prompts, number-sequence prompts, contrast sets and
trait specs (prompts / traits)."""
