"""The regression suite of kretprobes under recursion, non-local exits and
concurrent tasks: recursive guests (fib, ackermann, mutual recursion, tail calls),
setjmp/longjmp in assembly and in C, 2-16 tasks on the seeded scheduler, a pthread
worker pool, and property-based runs that check the counter identities

    entry_handler calls + rp.nmissed            == calls of the function
    return handler calls + rp.nunwound          == entry_handler calls that returned 0
    rp.nfree                               == rp.maxactive once every task is done

against oracles (Python models of the guests, unprobed runs, native runs).
"""
