"""Messages: a user's message to a running agent of a 1 → N → M tree in a real ``dispatch serve``,
delivered at that agent's next tool boundary, measured through the API.

The tree is the fan-out benchmark's (:mod:`bench._hub_load`); each leaf makes ``--rounds`` tool
calls, one per 50 ms model answer, while the benchmark posts messages to randomly chosen running
leaves, one every 20 ms. Prints:

- messages, API acknowledgement: ``POST /api/agents/{id}/messages`` until its 202 (the message is
  in the agent's inbox);
- messages, delivery overhead: from the API call until a WebSocket client receives the message's
  ``message.delivered`` event, minus the wait for the agent's boundary (the agent's last
  ``tool.call``, ``tool.result`` or ``agent.step`` event before the delivery, when it came after the
  call: the leaves' tool, ``check_messages``, takes the message inside the call, and a step takes
  what came during its model call once the model answered), so from the later of the two;
- messages, delivered in the hub: the same, ending when the hub delivered it (the event's
  timestamp) rather than when the client heard of it;
- messages, ack + delivery after it: stricter, the whole acknowledgement plus the time from the
  later of the acknowledgement and the boundary until the client receives the event (it counts
  the acknowledgement even where it overlapped the wait for the boundary);
- messages, sent / undelivered: how many were acknowledged, and how many were never delivered
  (their agent reported first).

``python -m bench.messages [--children N] [--grandchildren M] [--rounds R] [--messages K] [--quick]``
"""

from __future__ import annotations

import anyio

from bench._common import report, report_value
from bench._hub_load import run_load, tree_parser


async def main(children: int, grandchildren: int, rounds: int, messages: int) -> None:
    result = await run_load(children, grandchildren, 50.0, rounds=rounds, messages=messages)
    report_value("messages, agents", result.agents, "agents")
    report_value("messages, sent", len(result.ack_latencies), "messages")
    report_value("messages, undelivered", result.undelivered, "messages")
    report("messages, API acknowledgement", result.ack_latencies)
    report("messages, delivery overhead", result.delivery_overheads)
    report("messages, delivered in the hub", result.hub_delivery_overheads)
    report("messages, ack + delivery after it", result.ack_and_delivery)


if __name__ == "__main__":
    parser = tree_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=10, help="tool calls of each leaf (default 10)")
    parser.add_argument("--messages", type=int, default=300, help="messages to send (default 300; --quick: 10)")
    args = parser.parse_args()
    if args.quick:
        anyio.run(main, 3, 3, 10, 10)
    else:
        anyio.run(main, args.children, args.grandchildren, args.rounds, args.messages)
