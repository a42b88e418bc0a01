"""onestep-sr: one-step diffusion super-resolution (TUDSR, StrSR) with PyTorch Lightning.

``onestep_sr.cli`` holds the LightningCLI entry point (``python main.py ...`` / the ``onestep-sr`` command).
"""
