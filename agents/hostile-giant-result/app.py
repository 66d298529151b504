"""hostile-giant-result: returns a 64 MiB result (or the largest the memory cap lets it build).

Attacks: the host's result path (lifting a huge list<u8> out of the guest, then storing and
replying with it).
The host must: refuse a result larger than ``max_result_bytes`` as an invocation failure, without
copying it whole into host memory first where it can avoid it; nothing is committed or replied.
"""

import dagr_agent as dagr

MIB = 1024 * 1024


def start(ctx: dagr.Context, context: str) -> object:
    size = 64 * MIB
    while size >= MIB:
        try:
            data = bytes(size)
            # The SDK CBOR-encodes the result (a second copy) and the canonical ABI copies that
            # once more into the return area: make sure there is room for both, or go smaller.
            headroom = bytearray(2 * size + 64)
            del headroom
            return data
        except MemoryError:
            size //= 2
    return bytes(MIB)


Handler = dagr.handler(start=start)
