"""The smallest useful agent pair: one serves, one asks. Run a node first (`fabric node`)."""

import asyncio

from sdk import Msg, connect


async def main() -> None:
    async with connect("greeter") as greeter, connect("visitor") as visitor:

        @greeter.handler("greet")
        async def greet(msg: Msg) -> str:
            return f"hello, {msg.text()}"

        await greeter.flush()  # the handler's subscription has reached the node
        reply = await visitor.request("greet", "world", timeout=2)
        print(reply.text())


if __name__ == "__main__":
    asyncio.run(main())
