"""Stores: where merged state lives (memory://, sqlite:///, redis://); see ``base.load_store``."""
