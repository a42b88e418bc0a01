"""Lightning callbacks: evaluation (IQA metrics over whole validation/test sets), image logging, LoRA adapter export,
prediction writing, atomic checkpoint IO. Import them from their modules (``callbacks.evaluation`` ...)."""
