"""Lightning callbacks: evaluation (IQA metrics over whole validation/test sets), image logging, LoRA adapter export,
prediction writing. Import them from their modules (``callbacks.evaluation`` ...). The strategy and the checkpoint
IO plugin live in :mod:`plugins`."""
