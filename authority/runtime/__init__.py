"""The server process: a pure build step (``build``), the listeners, the background
loops, and the runtime that starts them in order and stops them in reverse."""
