"""hostile-output: aims at the operator's terminal through what the CLI prints.

Attacks: raw ANSI and OSC escapes (colour, a window title, a clipboard write, a hyperlink, a
screen clear) and bidirectional overrides in its log lines and result, and Rich markup in its
failure message (``[/x]`` crashed ``dagr run``). The CLI must print all of it as inert text.

Context ``fail``: fail with the markup message; anything else: log the escapes and return them.
"""

import dagr_agent as dagr

ESCAPES = [
    "\x1b[31mred\x1b[0m",
    "\x1b]0;pwned title\x07",
    "\x1b]52;c;cGF5bG9hZA==\x07",
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[H",
    "abc\u202edcba",
]


def start(ctx: dagr.Context, context: str) -> object:
    if context == "fail":
        raise dagr.Fail("[/x] [bold red]not markup[/bold red] [link=https://evil.example]x[/link] \x1b[5m!")
    for line in ESCAPES:
        ctx.log.info(line)
        print(line)
    return {"text": "".join(ESCAPES)}


Handler = dagr.handler(start=start)
