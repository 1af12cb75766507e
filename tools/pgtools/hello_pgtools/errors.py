"""The one error type the scripts report: a named step failed, and what to check."""


class StepFailed(Exception):
    """A step of a backup, restore or drill failed.

    ``str()`` is the one-line message an operator reads: the step, what went wrong, and
    what to check.
    """

    def __init__(self, step: str, problem: str, check: str):
        self.step = step
        self.problem = problem
        self.check = check
        super().__init__(f"{step} failed: {problem} (check: {check})")
