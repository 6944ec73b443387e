"""A process that appends to a buffer in a loop and says what it committed (killed by tests).

usage: python -m tests.agent._buffer_writer BUFFER KEYS_DIR
Prints ``COMMITTED <last seq>`` after each committed group.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent.buffer import Buffer
from agent.keys import load_key
from tests.agent._helpers import capture


async def main(path: Path, keys: Path) -> None:
    buffer = await Buffer.open(path, "gw-kill", load_key(keys).private)
    print(f"OPENED next_seq={buffer.next_seq}", flush=True)
    ms = 1_700_000_000_000
    while True:
        result = await buffer.append([capture(f"m{i % 3}", ms + i) for i in range(50)])
        ms += 50
        print(f"COMMITTED {result.seqs[-1]}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
