"""Panels and menus of the extension."""
