"""Runs the unittest suite and writes a JUnit XML report (what pytest --junitxml would)."""
import sys
import time
import unittest
from xml.sax.saxutils import quoteattr


class Recorder(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.cases = []
        self._start = 0.0

    def startTest(self, test):
        self._start = time.monotonic()
        super().startTest(test)

    def _record(self, test, outcome, detail=""):
        self.cases.append((test, outcome, detail, time.monotonic() - self._start))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)


def main(out):
    suite = unittest.defaultTestLoader.discover(".", pattern="test_*.py")
    result = unittest.TextTestRunner(resultclass=Recorder, verbosity=2).run(suite)
    with open(out, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="unittest" tests="%d">\n' % len(result.cases))
        for test, outcome, detail, secs in result.cases:
            cls, name = test.id().rsplit(".", 1)
            f.write('  <testcase classname=%s name=%s time="%.3f">' % (quoteattr(cls), quoteattr(name), secs))
            if outcome in ("failure", "error"):
                f.write("<%s message=%s/>" % (outcome, quoteattr(detail.splitlines()[-1] if detail else "")))
            elif outcome == "skipped":
                f.write("<skipped/>")
            f.write("</testcase>\n")
        f.write("</testsuite>\n")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "report.xml"))
