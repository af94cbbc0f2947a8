"""Safety: what a guest can make the host do is bounded by what the guest is allowed."""
