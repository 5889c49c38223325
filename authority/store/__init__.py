"""Persistence behind one interface; the embedded default is SQLite, production adds PostgreSQL."""
