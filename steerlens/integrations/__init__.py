"""steerlens inside other training stacks: a ``transformers``/TRL callback that tracks alignment
during training (:class:`SteerlensCallback`), and chats as Hugging Face ``datasets``
(:mod:`steerlens.integrations.hf_datasets`).

``SteerlensCallback`` needs only ``transformers`` (a core dependency); TRL, ``accelerate`` and
``datasets`` come with the ``trl`` extra (``pip install "steerlens[trl]"``).
"""

from steerlens.integrations.callback import RESULTS_NAME, TRACK_NAME, SteerlensCallback

__all__ = ["RESULTS_NAME", "TRACK_NAME", "SteerlensCallback"]
