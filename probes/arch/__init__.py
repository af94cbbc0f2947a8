"""Architecture back ends of the kprobes core (only x86-64 for now)."""
