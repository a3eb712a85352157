"""Dock widgets: Simulate, Load frame, Refine."""
