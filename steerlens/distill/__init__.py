from steerlens.distill.train import *  # noqa: F403
from steerlens.distill.train import _inner_hf, _make_student, _Target, _Trainer, _examples, _shared_prefix, _teacher_targets, NumberListGrammar  # noqa: F401
