"""thinker: asks a model once and reports what it answered, with what it cost.

The smallest model-driven agent: start context (JSON) {"prompt": "...", "model": "fast",
"system": "...", "tools": [{"name", "description", "parameters"}], "tool_choice": "auto",
"max_output_tokens": 64, "timeout_s": 60}. It awaits the call (no instance is alive while the
model thinks) and returns the answer's text, tool calls, finish reason, usage and model, or the
error the call ended with.
"""

import json

import dagr_agent as dagr


class Thinker(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context or "{}")
        messages = [{"role": "system", "content": spec["system"]}] if spec.get("system") else []
        messages.append({"role": "user", "content": spec.get("prompt", "Say hello.")})
        try:
            call = ctx.model.chat(
                messages,
                model=spec.get("model", "fast"),
                tools=spec.get("tools", []),
                tool_choice=spec.get("tool_choice", "auto"),
                max_output_tokens=spec.get("max_output_tokens"),
            )
        except dagr.HostError as refused:
            return {"refused": refused.kind, "error": refused.message}
        ctx.await_all([call], timeout_s=float(spec.get("timeout_s", 60)))

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        if not resumed.results:
            return {"error": "the model did not answer in time", "kind": "timeout"}
        (result,) = resumed.results
        if result.chat is None:
            return {"error": result.error, "kind": result.error_kind}
        chat = result.chat
        return {
            "text": chat.text,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in chat.tool_calls],
            "finish_reason": chat.finish_reason,
            "usage": [chat.input_tokens, chat.output_tokens],
            "model": chat.model,
        }


Handler = dagr.handler(Thinker)
