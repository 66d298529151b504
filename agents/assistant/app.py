"""assistant: the seed's model-driven main agent, a ``ToolAgent`` whose model decides what to do.

`dagr start --agent assistant --context "Check GME sentiment on Reddit"`: the system prompt
(config.md) tells the model it is the main agent of a dagr swarm and that the registered
stock-analyst does the analysis. Its one tool spawns a stock-analyst and awaits its answer; with
the answers in the conversation it writes a short report. The result, published to
``agents.main.results`` when the loop ends (early too, with ``stopped`` saying why):

- ``answer``: the model's report; ``stopped``: "answer", "max-iterations", "timeout" or why the
  model call failed ("quota-exceeded", "unavailable"...), ``reason`` the details.
- ``spawned``: each analyst asked, ``{specialist, task, child_id, turn}`` and, once it answered,
  ``ok`` with its ``result`` (the analyst's figures) or ``error``.
- ``turns``, ``tool_calls``, ``usage`` ([input, output] tokens over every turn).

Made to finish even on a 135M-parameter local model: the first turn must call a tool, and spawn
is the only one, so it delegates at once; the last allowed turn may call none, so it answers.
Nothing here names the specialist it runs as, so it works registered under any name.
"""

import dagr_agent as dagr


class Assistant(dagr.ToolAgent):
    model = "fast"
    dagr_tools = ("spawn",)
    specialists = ("stock-analyst",)
    first_tool_choice = "required"
    # Room for one spawn per ticker the analyst knows, and the answer.
    max_iterations = 6
    max_output_tokens = 400
    # A small local model on a busy machine may take minutes a turn; grants.max_suspend_s matches.
    turn_timeout_s = 300
    report_subject = "agents.main.results"


Handler = dagr.handler(Assistant)
