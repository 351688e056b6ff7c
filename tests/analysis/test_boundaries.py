"""analysis reads run folders only: importing it must not pull in the runner or Prefect."""

import subprocess
import sys

ALLOWED = {"crowdlab.experiments", "crowdlab.experiments.schema"}  # storage layout only


def test_import_analysis_pulls_no_runner_or_prefect():
    code = ("import sys, crowdlab.analysis; "
            "print('\\n'.join(m for m in sys.modules if m.startswith(('crowdlab.experiments', 'prefect'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(filter(None, result.stdout.splitlines()))
    assert loaded <= ALLOWED, loaded - ALLOWED
