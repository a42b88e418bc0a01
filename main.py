"""onestep-sr entry point: ``python main.py {fit,validate,test,predict} --config configs/....yaml``.

The CLI itself lives in :mod:`onestep_sr.cli` (installed with the package, also as the ``onestep-sr`` command).
"""

from onestep_sr.cli import main

if __name__ == "__main__":
    main()
