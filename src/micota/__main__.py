import os
import sys

# ``python -m micota`` puts the current directory first on sys.path, so a module file beside a
# recipe could shadow any import; micota loads no code from the user's directory by default.
if sys.path and sys.path[0] in ("", os.getcwd()):
    _cwd = sys.path.pop(0)
    try:
        import micota.cli  # noqa: F401
    except ModuleNotFoundError as e:  # micota itself lives in the current directory
        if e.name != "micota":
            raise
        sys.path.insert(0, _cwd)

from micota.cli import main  # noqa: E402

main()
