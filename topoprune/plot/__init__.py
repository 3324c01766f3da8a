"""Figures. matplotlib is imported inside each function, never at package import."""
