"""Real-time fan-out, decided without I/O: the rooms' flows and keys (``core``), the wire
form (``messages``), a subscriber's queue (``inbox``) and what one process does with its
rooms' subscriptions: replays, read-backs and gaps (``rooms``)."""
