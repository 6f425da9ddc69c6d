"""How every check here ends: each problem on a line of its own, then FAILED or passed.
Imported from beside the check (Python puts a script's directory on sys.path)."""


def finish(problems):
    """Prints the problems and the verdict; returns the exit status (1 if any problem)."""
    for p in problems:
        print("FAIL:", p)
    print("FAILED" if problems else "passed")
    return 1 if problems else 0
