"""The compile workers' early start on the path users run (fifteenth session, call 4):
``python -m experiments.train`` as the committed code runs it (``early``: a single compiled
CUDA run starts inductor's compile workers before its model is built), or with that start
left out (``late``: the workers start when the first graph reaches inductor, as before).

    python pool_ab.py early|late <experiments.train overrides>
"""

import runpy
import sys

if __name__ == "__main__":
    variant = sys.argv.pop(1)
    if variant == "late":
        import experiments.trainer.loop as loop

        loop.start_compile_workers = lambda *args: False  # type: ignore[assignment]
    elif variant != "early":
        raise SystemExit(f"unknown variant {variant!r}: early or late")
    sys.argv[0] = "experiments.train"
    runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
