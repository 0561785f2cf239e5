"""``echo``: the task's output is its prompt, exactly as the agent received it.

Useful for tests and benchmarks (no process is started) and to see what an AI backend would be
given: it takes context, so shared and task context appear in the output when there is any.
"""

from podium.agents.backends import Backend, Finding, Run
from podium.models import Outcome, TaskState


class EchoBackend(Backend):
    takes_context = True
    inline = True

    def doctor(self) -> list[Finding]:
        return [Finding.ok("", "runs in-process: needs nothing")]

    def run(self, run: Run) -> Outcome:
        data = run.prompt.encode("utf-8")
        truncated = len(data) > run.max_output
        return Outcome(TaskState.COMPLETED, output=data[: run.max_output],
                       output_truncated=truncated, exit_code=0)
