"""One execution path for recording and interventions: pluggable backends (:mod:`.backends`)
run the forward pass, :mod:`.activations` records, :mod:`.edits` and :mod:`.intervene` steer
and ablate as context managers, :mod:`.batching` pads and reduces."""
